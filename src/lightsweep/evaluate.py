"""`python evaluate.py model_uri=...`: any MLflow model on a data set's test split, as a new run.

The model is loaded with `mlflow.pyfunc.load_model` (lightsweep's own models need nothing of
lightsweep for that) and fed the test split's samples as the data set stores them (tracking.datasets).
The evaluation run records accuracy and loss, per-class precision/recall/F1 (metrics and
`per_class.csv`), the confusion matrix and, for image data, the most confident mistakes; its inputs
are the model (MLflow 3's LoggedModelInput) and the test set, and its metrics are also linked to the
model, so they show on the model's page. An unknown URI, or a model that does not take this data
set's samples or classes, is refused in one line before any run exists (exit 2).
"""

from __future__ import annotations

import logging
import re

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from lightsweep import interrupts
from lightsweep.entry import command
from lightsweep.errors import LightsweepError

log = logging.getLogger("lightsweep")


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Evaluate `cfg.model_uri` on `cfg.data`'s test split; returns the metrics (and `run_id`)."""
    import mlflow

    from lightsweep.tracking.store import open_store

    uri = _model_uri(cfg)
    tracking = (cfg.get("logger") or {}).get("mlflow")
    if tracking is None:
        raise LightsweepError("evaluate.py logs to MLflow and finds models there: drop logger=none")
    client = open_store(str(tracking.tracking_uri))
    mlflow.set_tracking_uri(str(tracking.tracking_uri))  # models:/ URIs resolve through this store
    info = _model_info(uri)
    logged = client.get_logged_model(info.model_id) if info.model_id else None
    _choose_task(cfg, info, logged)
    datamodule = _datamodule(cfg)
    _check_fits(uri, info, datamodule, cfg)
    datamodule.setup("test")

    from lightsweep.tracking.datasets import to_raw

    x_norm, y = datamodule.tensors["test"]
    x, y = to_raw(datamodule, x_norm), y.cpu().numpy()
    model = mlflow.pyfunc.load_model(uri)
    try:
        probabilities = np.concatenate(
            [
                np.asarray(model.predict(x[i : i + int(cfg.batch_size)]), dtype=np.float64)
                for i in range(0, len(x), int(cfg.batch_size))
            ]
        )
    except Exception as err:
        raise LightsweepError(
            f"{uri} does not take data={_data_choice(cfg)}'s samples ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}): pass the data set it was trained on"
        ) from None
    result = scores(probabilities, y, datamodule.class_names)
    metrics = {k: v for k, v in result.items() if isinstance(v, float)}
    metrics["run_id"] = _log_run(client, cfg, uri, info, logged, datamodule, x, y, probabilities, result)
    print(
        f"test/acc={metrics['test/acc']:.4f} test/loss={metrics['test/loss']:.4f} "
        f"test/f1_macro={metrics['test/f1_macro']:.4f} on {len(y)} {_data_choice(cfg)} test samples"
    )
    print(f"MLflow run {metrics['run_id']} (linked to model {info.model_id or uri})")
    return metrics


def scores(probabilities: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict:
    """Accuracy, log loss, macro and per-class precision/recall/F1 and the confusion matrix."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    k = len(class_names)
    if probabilities.ndim == 1:  # binary: the positive class's probability
        probabilities = np.stack([1 - probabilities, probabilities], axis=1)
    predicted = probabilities.argmax(axis=1)
    p_true = probabilities[np.arange(len(labels)), labels]
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=list(range(k)), zero_division=0
    )
    out: dict = {
        "test/acc": float((predicted == labels).mean()),
        "test/loss": float(-np.log(np.clip(p_true, 1e-12, 1.0)).mean()),
        "test/precision_macro": float(precision.mean()),
        "test/recall_macro": float(recall.mean()),
        "test/f1_macro": float(f1.mean()),
    }
    for i, name in enumerate(class_names):
        label = _metric_label(name)
        out[f"test/precision/{label}"] = float(precision[i])
        out[f"test/recall/{label}"] = float(recall[i])
        out[f"test/f1/{label}"] = float(f1[i])
    out["per_class"] = [
        {
            "class": name,
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    ]
    out["confusion"] = confusion_matrix(labels, predicted, labels=list(range(k)))
    return out


def _metric_label(name: str) -> str:
    """A class name as one part of a metric key (`T-shirt/top` -> `T-shirt_top`)."""
    return re.sub(r"[^A-Za-z0-9_.\- ]+", "_", str(name)).strip() or "class"


# --- the model -------------------------------------------------------------------------------------


def _model_uri(cfg: DictConfig) -> str:
    uri = OmegaConf.select(cfg, "model_uri", throw_on_missing=False)
    if not uri or str(uri) == "???":
        raise LightsweepError(
            "which model? pass model_uri=models:/<name>@champion (or models:/<name>/<version>, models:/<model id>)"
        )
    return str(uri)


def _model_info(uri: str):
    import mlflow.models

    try:
        return mlflow.models.get_model_info(uri)
    except Exception as err:  # MLflow raises several types for unknown names, aliases, ids, schemes
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise LightsweepError(
            f"model_uri={uri}: no such model in this store ({reason}): use a registered model "
            "(models:/<name>@champion, models:/<name>/<version>), or models:/<model id> from the UI"
        ) from None


def _tensor_spec(schema):
    """(dtype name, shape) of a one-tensor schema, else None."""
    if schema is None or not schema.is_tensor_spec() or len(schema.inputs) != 1:
        return None
    spec = schema.inputs[0]
    return np.dtype(spec.type).name, tuple(spec.shape)


def _choose_task(cfg: DictConfig, info, logged) -> None:
    """A binary model (one output) on a multi-class set: the task its run trained, else binary_task."""
    outputs = _tensor_spec(info.signature.outputs) if info.signature else None
    data = cfg.data
    if outputs is None or len(outputs[1]) != 1 or data.num_classes == 2:
        return
    if data.classes is not None or data.positive_class is not None:
        return
    params = logged.params if logged is not None else {}
    with open_dict(cfg):
        if params.get("data.positive_class") not in (None, "null", "None"):
            data.positive_class = _stored_names(params["data.positive_class"], "data.positive_class")
        elif params.get("data.classes") not in (None, "null", "None"):
            data.classes = _stored_names(_parse_list(params["data.classes"]), "data.classes")
        elif data.get("binary_task") is not None:
            data.classes = data.binary_task
    task = data.positive_class if data.positive_class is not None else OmegaConf.to_container(data.classes)
    print(f"binary model: evaluated on {task} (data.classes / data.positive_class override this)")


def _stored_names(value, key: str):
    """Class names (or indices) from the model's stored params, kept as data: anyone who may edit the
    experiment can log params, and an interpolation or a nested node would be built with cfg.data."""
    names = value if isinstance(value, list) else [value]
    if not all(isinstance(n, (str, int)) and not isinstance(n, bool) and "${" not in str(n) for n in names):
        raise LightsweepError(
            f"the model's stored param {key}={str(value)[:120]} is not a class name or a list of them: "
            "pass the task yourself (data.classes=[a,b] or data.positive_class=NAME)"
        )
    return value


def _parse_list(text: str) -> list:
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    return value if isinstance(value, list) else [t.strip().strip("'\"") for t in text.strip("[]").split(",")]


def _datamodule(cfg: DictConfig):
    from lightsweep.build import instantiate

    return instantiate(cfg, "data", _convert_="all")


def _check_fits(uri: str, info, datamodule, cfg: DictConfig) -> None:
    """The model's signature against the data set's samples and classes."""
    if info.signature is None:
        return  # a foreign model without one: predicting tells
    fmt = datamodule.raw_format()
    inputs, outputs = _tensor_spec(info.signature.inputs), _tensor_spec(info.signature.outputs)
    fix = f"pass the data set it was trained on (data=..., now data={_data_choice(cfg)})"
    if inputs is not None and (inputs[0] != fmt.dtype or tuple(inputs[1][1:]) != tuple(fmt.shape)):
        shape = ", ".join(map(str, inputs[1][1:]))
        raise LightsweepError(
            f"{uri} takes {inputs[0]} (N, {shape}) samples but data={_data_choice(cfg)} has {fmt.describe()}: {fix}"
        )
    if outputs is not None:
        k = 2 if len(outputs[1]) == 1 else outputs[1][-1]
        if k != datamodule.num_classes:
            raise LightsweepError(
                f"{uri} predicts {k} classes but data={_data_choice(cfg)} has "
                f"{datamodule.num_classes}: {fix}, or its classes (data.classes=[...])"
            )


def _data_choice(cfg: DictConfig) -> str:
    from lightsweep.tracking.setup import hydra_choices

    return hydra_choices(cfg).get("data") or str(cfg.data.get("_target_", "data")).rsplit(".", 1)[-1]


# --- the evaluation run ----------------------------------------------------------------------------


def _registered(uri: str) -> dict[str, str]:
    """Tags naming the registered model version a `models:/<name>@<alias>` or `/<version>` URI points at."""
    from mlflow.tracking import MlflowClient

    match = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))", uri)
    if not match or match.group(1).startswith("m-"):
        return {}
    name, alias, number = match.groups()
    client = MlflowClient()
    version = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
    tags = {"registered_model": name, "registered_version": str(version.version)}
    if alias:
        tags["registered_alias"] = alias
    return tags


def _log_run(client, cfg, uri, info, logged, datamodule, x, y, probabilities, result) -> str:
    import csv
    import time
    from pathlib import Path

    import torch
    from mlflow.entities import DatasetInput, InputTag, LoggedModelInput, Metric, Param

    from lightsweep import plots
    from lightsweep.tracking.batches import log_batch
    from lightsweep.tracking.datasets import split_datasets
    from lightsweep.tracking.params import flatten, mask_secrets
    from lightsweep.tracking.run import create_run, tracked_run
    from lightsweep.tracking.store import ensure_experiment

    tracking = cfg.logger.mlflow
    experiment_id = ensure_experiment(client, str(tracking.tracking_uri), str(cfg.experiment_name))
    registered = _registered(uri)
    label = (
        f"{registered['registered_model']}-v{registered['registered_version']}"
        if registered
        else (logged.name if logged is not None else "model")
    )
    data = _data_choice(cfg)
    tags = {
        "lightsweep.role": "evaluation",
        "model_uri": uri,
        "data": data,
        "mlflow.source.name": "evaluate.py",
        "mlflow.source.type": "LOCAL",
        **registered,
    }
    if info.model_id:
        tags["lightsweep.model_id"] = info.model_id
    if info.run_id:
        tags["lightsweep.model_run_id"] = info.run_id
    tags.update({str(k): str(mask_secrets(v, str(k))) for k, v in (cfg.get("tags") or {}).items()})
    with interrupts.held() as creating:  # a signal meanwhile waits until tracked_run owns the run
        run_id = create_run(client, experiment_id, str(cfg.run_name or f"eval-{label}"), tags)
        out = Path(str(cfg.paths.output_dir))
        with tracked_run(client, run_id):
            creating.release()
            data_params = flatten(mask_secrets(OmegaConf.to_container(cfg.data, resolve=True)), "data")
            params = [Param("model_uri", uri), Param("batch_size", str(cfg.batch_size))]
            log_batch(client, run_id, params=params + [Param(k, v) for k, v in data_params.items()])
            test = split_datasets(datamodule, data)["test"]
            client.log_inputs(
                run_id,
                datasets=[DatasetInput(test, tags=[InputTag("mlflow.data.context", "test")])],
                models=[LoggedModelInput(info.model_id)] if info.model_id else None,
            )
            now = int(time.time() * 1000)
            values = {k: v for k, v in result.items() if isinstance(v, float)}
            metrics = [
                Metric(k, v, now, 0, model_id=info.model_id, dataset_name=test.name, dataset_digest=test.digest)
                for k, v in values.items()
            ]
            log_batch(client, run_id, metrics=metrics)
            table = out / "per_class.csv"
            table.parent.mkdir(parents=True, exist_ok=True)
            with open(table, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=["class", "precision", "recall", "f1", "support"])
                writer.writeheader()
                writer.writerows(result["per_class"])
            client.log_artifact(run_id, str(table))
            paths = [
                plots.confusion_matrix(
                    torch.as_tensor(result["confusion"]), datamodule.class_names, out / "plots" / "confusion_matrix.png"
                )
            ]
            if datamodule.image_shape:
                images = x.reshape(len(x), *datamodule.image_shape)
                grid = plots.misclassified(
                    images, y, probabilities, datamodule.class_names, out / "plots" / "misclassified.png"
                )
                if grid is not None:
                    paths.append(grid)
            for path in paths:
                client.log_artifact(run_id, str(path), "plots")
    return run_id


# --- the command line ------------------------------------------------------------------------------


@command("evaluate")
def task(cfg: DictConfig) -> dict[str, float]:
    return evaluate(cfg)


# `python evaluate.py ...`: Ctrl-C and SIGTERM end the evaluation run KILLED, exit 130/143.
run = task.run
