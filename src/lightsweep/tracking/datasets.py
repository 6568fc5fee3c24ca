"""A run's data sets as MLflow inputs (the UI's Dataset column), and its samples as a model sees them.

Train, validation and test are logged with `MlflowClient.log_inputs` (never `mlflow.log_input`,
which starts a run of its own when none is active), each with a name (`fashion_mnist-train`), its
source (the files or the code that made it), a digest and a context (training, validation, test).
The digest is MLflow's kind (a sample, not every byte): an md5 of the split's labels and shape, an
evenly spaced sample of its images, the class selection, the split seed and the source; the same
data split the same way gets the same digest in every run, on every machine.

"Raw" samples are what the data set stores before lightsweep normalises them, as its data module
says (`raw_format()`): Fashion-MNIST and MNIST uint8 pixels (N, 28, 28); the scikit-learn sets and
xor float features (N, D) (digits: its 64 pixel values 0..16). A logged model takes these (its
normalisation is inside it); `to_raw` recovers them from the DataModule's normalised tensors (exactly
for uint8: the normalisation is undone and rounded; floats to a few ulps). Sources too are the data
module's own (`source()`: its files, or the code that made it).
"""

from __future__ import annotations

import hashlib
import json
import time
from weakref import WeakKeyDictionary

import numpy as np

SPLITS = ("train", "val", "test")  # the DataModule's tensor keys
CONTEXT = {"train": "training", "val": "validation", "test": "test"}
SPLIT_NAME = {"train": "train", "val": "validation", "test": "test"}
DIGEST_SAMPLES = 500  # samples hashed per split (all labels are)
ATTEMPTS = 4  # log_inputs tries (parallel jobs race to create the same data set)
DIGESTED: WeakKeyDictionary = WeakKeyDictionary()  # data module -> {choice: its split_datasets}


def to_raw(datamodule, x) -> np.ndarray:
    """Normalised features (N, D), any device -> the samples as the data set stores them.
    (numpy, one thread: torch's parallel elementwise ops cost more than they save at these sizes.)"""
    import torch

    fmt = datamodule.raw_format()
    x = x.detach().to("cpu", torch.float32).numpy() * _numpy(datamodule.std) + _numpy(datamodule.mean)
    if fmt.dtype == "uint8":
        x = np.clip(np.rint(x * np.float32(fmt.scale)), 0, 255).astype(np.uint8)
    return x.astype(fmt.dtype, copy=False).reshape(len(x), *fmt.shape)


def _numpy(value):
    """A DataModule's mean/std: one float (images), or a tensor of one value per feature."""
    return value.detach().to("cpu").numpy().astype(np.float32) if hasattr(value, "detach") else np.float32(value)


def data_name(datamodule, choice: str | None = None) -> str:
    """The data config's name (`fashion_mnist`), else the data set's own."""
    return choice or str(getattr(datamodule, "dataset", type(datamodule).__name__)).lower()


def digest(datamodule, split: str) -> str:
    """md5 of the split's labels, shape, class selection, split seed and source; for uint8 data sets
    also of an evenly spaced sample of its images (recovered exactly). Float samples are left out:
    undoing the normalisation is exact only to a few ulps, and their source names what made them."""
    import torch

    x, y = datamodule.tensors[split]
    fmt = datamodule.raw_format()
    h = hashlib.md5()
    selection = {
        "classes": datamodule.classes,
        "positive_class": datamodule.positive_class,
        "split_seed": datamodule.split_seed,
        "val_size": datamodule.val_size,
        "split": split,
    }
    source_type, source = datamodule.source()
    origin = source if source_type == "code" else getattr(datamodule, "dataset", "")  # no local paths
    h.update(json.dumps([fmt.dtype, fmt.shape, len(y), selection, origin], default=str).encode())
    h.update(y.detach().to("cpu").numpy().astype("<i8").tobytes())
    if fmt.dtype == "uint8":
        rows = np.unique(np.linspace(0, len(y) - 1, min(len(y), DIGEST_SAMPLES)).astype(np.int64))
        h.update(to_raw(datamodule, x.index_select(0, torch.as_tensor(rows, device=x.device))).tobytes())
    return h.hexdigest()[:12]


def split_datasets(datamodule, choice: str | None = None) -> dict[str, object]:
    """{split: mlflow.entities.Dataset} for the DataModule's train, val and test tensors (digested once
    per data module: its tensors do not change once set up, and a vectorized group's members share one)."""
    known = DIGESTED.setdefault(datamodule, {})
    if choice not in known:
        known[choice] = _split_datasets(datamodule, choice)
    return known[choice]


def _split_datasets(datamodule, choice: str | None) -> dict[str, object]:
    from mlflow.data.schema import TensorDatasetSchema
    from mlflow.entities import Dataset
    from mlflow.types import Schema, TensorSpec

    fmt = datamodule.raw_format()
    name = data_name(datamodule, choice)
    source_type, source = datamodule.source()
    schema = TensorDatasetSchema(
        features=Schema([TensorSpec(np.dtype(fmt.dtype), (-1, *fmt.shape), "features")]),
        targets=Schema([TensorSpec(np.dtype(np.int64), (-1,), "targets")]),
    )
    out = {}
    for split in SPLITS:
        if split not in datamodule.tensors:
            continue
        y = datamodule.tensors[split][1]
        profile = {"num_rows": len(y), "classes": datamodule.class_names, "split_seed": datamodule.split_seed}
        out[split] = Dataset(
            name=f"{name}-{SPLIT_NAME[split]}",
            digest=digest(datamodule, split),
            source_type=source_type,
            source=json.dumps(source),
            schema=json.dumps(schema.to_dict()),
            profile=json.dumps(profile),
        )
    return out


def log_datasets(client, run_id: str, datamodule, choice: str | None = None) -> dict[str, object]:
    """Log train, validation and test as the run's inputs (an existing input is not duplicated)."""
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.exceptions import MlflowException

    datasets = split_datasets(datamodule, choice)
    inputs = [
        DatasetInput(dataset, tags=[InputTag("mlflow.data.context", CONTEXT[split])])
        for split, dataset in datasets.items()
    ]
    for attempt in range(ATTEMPTS):
        try:
            client.log_inputs(run_id, datasets=inputs)
            break
        except MlflowException:
            # Parallel sweep jobs log the same data set at once: the store creates it once (a unique
            # key) and refuses the other job's insert; its transaction is rolled back, and on the
            # next attempt it finds the data set there.
            if attempt == ATTEMPTS - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    return datasets
