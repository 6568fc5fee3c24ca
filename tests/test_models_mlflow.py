"""MLflow models and data sets (fast tier): every run's LoggedModel and inputs, the model's contract
(raw samples in, probabilities out, no lightsweep needed to load it), the best run of a sweep, the
registry and evaluation, on real Fashion-MNIST slices and real sqlite stores in tmp_path.

The slow parts (CLI end to end, a fresh process, `mlflow models serve`, kill -9) are in test_registry.py.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from helpers import ROOT, needs_fashion_mnist, tracking_uri, write_mnist_like
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from lightsweep.errors import LightsweepError
from lightsweep.train import train

# FAST tests the first 2 batches of 1024 test images.
TESTED = 2048


def fashion_test_images(n: int = TESTED):
    """The official test images as stored (uint8, N x 28 x 28), read without lightsweep."""
    from torchvision.datasets import FashionMNIST

    ds = FashionMNIST(str(ROOT / "data"), train=False, download=False)
    return ds.data[:n].numpy(), ds.targets[:n].numpy()


def the_model(client, run_id: str):
    run = client.get_run(run_id)
    (output,) = run.outputs.model_outputs
    return client.get_logged_model(output.model_id), output


@needs_fashion_mnist
def test_a_run_logs_a_servable_model_and_its_data_sets(make_cfg, tmp_path):
    import mlflow

    metrics = train(make_cfg("model=mlp", "seed=3"))
    client = MlflowClient(tracking_uri(tmp_path))
    run = client.get_run(metrics["run_id"])
    model, output = the_model(client, run.info.run_id)

    assert model.status.to_proto() == model.status.READY.to_proto()
    assert model.source_run_id == run.info.run_id and model.experiment_id == run.info.experiment_id
    assert model.name == "mlp-adam-s3"
    assert model.params["optimizer.lr"] == "0.001" and model.tags["data"] == "fashion_mnist"
    # Linked metrics: validation at the best checkpoint's step, test at the end, each with its data set.
    linked = {m.key: m for m in model.metrics}
    assert linked["test/acc"].value == pytest.approx(metrics["test/acc"])
    assert linked["test/acc"].dataset_name == "fashion_mnist-test"
    val_history = client.get_metric_history(run.info.run_id, "val/acc")
    best = max(val_history, key=lambda m: (m.value, -m.step))
    assert (linked["val/acc"].value, linked["val/acc"].step, output.step) == (best.value, best.step, best.step)
    assert linked["val/acc"].dataset_name == "fashion_mnist-validation"
    assert model.tags["lightsweep.val_acc"] == repr(best.value)
    # The run's own histories are unchanged by the linking (same points, no duplicates).
    assert len(val_history) == 2 and len(client.get_metric_history(run.info.run_id, "test/acc")) == 1

    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"fashion_mnist-train", "fashion_mnist-validation", "fashion_mnist-test"}
    contexts = {name: [t.value for t in i.tags if t.key == "mlflow.data.context"] for name, i in inputs.items()}
    assert contexts == {
        "fashion_mnist-train": ["training"],
        "fashion_mnist-validation": ["validation"],
        "fashion_mnist-test": ["test"],
    }
    assert '"num_rows": 55000' in inputs["fashion_mnist-train"].dataset.profile
    assert "FashionMNIST/raw" in inputs["fashion_mnist-test"].dataset.source
    assert inputs["fashion_mnist-test"].dataset.source_type == "local"

    # The model: uint8 images in, (N, 10) probabilities out, the run's test accuracy on its test images.
    pyfunc = mlflow.pyfunc.load_model(model.model_uri)
    signature = pyfunc.metadata.signature
    assert signature.inputs.inputs[0].type == np.dtype("uint8") and signature.inputs.inputs[0].shape == (-1, 28, 28)
    assert signature.outputs.inputs[0].shape == (-1, 10)
    images, labels = fashion_test_images()
    probabilities = pyfunc.predict(images)
    assert probabilities.shape == (TESTED, 10) and probabilities.dtype == np.float32
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert (probabilities.argmax(axis=1) == labels).mean() == pytest.approx(metrics["test/acc"], abs=1e-3)
    # pt2: torch.export's archive, no pickled code; an input example of a few images.
    artifacts = {a.path for a in client.list_logged_model_artifacts(model.model_id)}
    assert {"MLmodel", "input_example.json", "serving_input_example.json"} <= artifacts
    assert [a.path for a in client.list_logged_model_artifacts(model.model_id, "data")] == ["data/model.pt2"]


@pytest.mark.parametrize("data", ["mnist", "digits"])
def test_the_same_split_gets_the_same_digest_and_another_split_another(make_cfg, tmp_path, data):
    from hydra.utils import instantiate

    from lightsweep.tracking.datasets import split_datasets

    root = tmp_path / "data"
    write_mnist_like(root / "MNIST" / "raw", n_train=200, n_test=50)

    files = [f"data.root={root}", "data.local_copies=[]", "data.val_size=50"] if data == "mnist" else []

    def digests(*overrides):
        cfg = make_cfg(f"data={data}", *files, *overrides)
        datamodule = instantiate(cfg.data)
        datamodule.setup("fit")
        return {name: d.digest for name, d in split_datasets(datamodule, data).items()}

    first = digests("seed=1")
    assert first == digests("seed=2")  # the training seed shuffles batches, not the data
    other = digests("seed=1", "data.split_seed=5")
    assert all(other[split] != first[split] for split in first)  # the digest covers the split seed
    assert len(set(first.values())) == 3


@needs_fashion_mnist
def test_a_binary_model_outputs_the_positive_class_probability(make_cfg, tmp_path):
    import mlflow

    metrics = train(make_cfg("model=logistic"))
    client = MlflowClient(tracking_uri(tmp_path))
    model, _ = the_model(client, metrics["run_id"])
    pyfunc = mlflow.pyfunc.load_model(model.model_uri)
    assert pyfunc.metadata.signature.outputs.inputs[0].shape == (-1,)
    images, labels = fashion_test_images(10000)
    keep = np.isin(labels, [0, 6])  # T-shirt/top vs Shirt, the first 2048 of them tested
    images, labels = images[keep][:TESTED], (labels[keep][:TESTED] == 6).astype(int)
    p = pyfunc.predict(images)
    assert p.shape == (len(images),) and ((p >= 0) & (p <= 1)).all()
    assert ((p > 0.5) == labels).mean() == pytest.approx(metrics["test/acc"], abs=1e-3)


@pytest.mark.parametrize(
    "data, inputs, source",
    [
        ("xor", (-1, 2), "lightsweep.data.sklearn_sets.make_xor(n_samples=2000, noise=0.25, random_state=0)"),
        ("digits", (-1, 64), "sklearn.datasets._base.load_digits(return_X_y=True)"),
    ],
    ids=["xor", "digits"],
)
def test_float_feature_sets_take_their_features(make_cfg, tmp_path, data, inputs, source):
    """digits and xor store float features (xor standardised per feature): same predictions as the run;
    their data sets' source is the code that made them, as their data module says."""
    import mlflow

    from lightsweep.build import instantiate
    from lightsweep.tracking.datasets import to_raw

    cfg = make_cfg(f"data={data}", "model=mlp", "trainer.limit_test_batches=1.0")
    metrics = train(cfg)
    client = MlflowClient(tracking_uri(tmp_path))
    model, _ = the_model(client, metrics["run_id"])
    pyfunc = mlflow.pyfunc.load_model(model.model_uri)
    spec = pyfunc.metadata.signature.inputs.inputs[0]
    assert spec.type == np.dtype("float32") and spec.shape == inputs
    datamodule = instantiate(cfg, "data", _convert_="all")
    datamodule.setup("test")
    x, y = datamodule.tensors["test"]
    p = pyfunc.predict(to_raw(datamodule, x))
    assert (p.argmax(axis=1) == y.numpy()).mean() == pytest.approx(metrics["test/acc"], abs=1e-3)
    assert datamodule.raw_format().describe() == f"float32 (N, {inputs[1]})"
    run = client.get_run(metrics["run_id"])
    for item in run.inputs.dataset_inputs:
        assert (item.dataset.source_type, json.loads(item.dataset.source)) == datamodule.source()
        assert datamodule.source() == ("code", {"tags": {"mlflow.source.name": source}})


def test_raw_samples_are_recovered_exactly_from_the_normalised_images(make_cfg, tmp_path):
    """The model takes uint8 images; undoing the DataModule's normalisation gives the stored bytes back."""
    from hydra.utils import instantiate
    from torchvision.datasets import MNIST

    from lightsweep.tracking.datasets import to_raw

    root = tmp_path / "data"
    write_mnist_like(root / "MNIST" / "raw", n_train=200, n_test=50)
    datamodule = instantiate(
        make_cfg("data=mnist", f"data.root={root}", "data.val_size=50", "data.local_copies=[]").data
    )
    datamodule.setup("fit")
    assert datamodule.raw_format().describe() == "uint8 (N, 28, 28)"
    assert datamodule.source() == ("local", {"uri": (root / "MNIST" / "raw").resolve().as_uri()})
    stored = MNIST(str(root), train=False).data.numpy()
    assert np.array_equal(to_raw(datamodule, datamodule.tensors["test"][0]), stored)


def test_misclassified_grid_shows_the_most_confident_mistakes_first(tmp_path):
    from lightsweep import plots

    images = np.zeros((4, 8, 8), dtype=np.uint8)
    labels = np.array([0, 1, 1, 0])
    probabilities = np.array([[0.4, 0.6], [0.2, 0.8], [0.7, 0.3], [0.01, 0.99]])
    shown, predicted, confidence = plots.most_confident_mistakes(labels, probabilities)
    assert shown.tolist() == [3, 2, 0] and predicted.tolist() == [1, 1, 0, 1]
    assert plots.most_confident_mistakes(labels, np.array([0.9, 0.9, 0.1, 0.2]))[0].tolist() == [0, 2]  # binary
    path = plots.misclassified(images, labels, probabilities, ["a", "b"], tmp_path / "grid.png")
    assert path.is_file() and path.stat().st_size > 1000
    assert plots.misclassified(images, labels, np.eye(2)[labels], ["a", "b"], tmp_path / "none.png") is None


def test_log_models_takes_three_values(make_cfg):
    with pytest.raises(LightsweepError, match="log_models=sometimes is not one of best, all, none"):
        train(make_cfg("log_models=sometimes"))


# --- a sweep's best run, by validation accuracy at the best checkpoint --------------------------------


def _child(client, experiment_id, parent_id, job, val_acc, test_acc, status="FINISHED", stage=None, monitor=None):
    tags = {"mlflow.parentRunId": parent_id, "lightsweep.job": str(job)}
    if stage:
        tags["stage"] = stage
    run_id = client.create_run(experiment_id, run_name=f"job{job}", tags=tags).info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric("val/acc", v, now, step) for step, v in val_acc]
    metrics += [Metric("test/acc", test_acc, now, 99)]
    if monitor is not None:
        client.log_param(run_id, "callbacks.model_checkpoint.monitor", "val/loss")
        client.log_param(run_id, "callbacks.model_checkpoint.mode", "min")
        metrics += [Metric("val/loss", v, now, step) for step, v in monitor]
    client.log_batch(run_id, metrics=metrics)
    client.set_terminated(run_id, status)
    return run_id


def test_best_child_is_chosen_by_validation_accuracy_at_its_best_checkpoint(tmp_path):
    from lightsweep.tracking.best import best_child

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment_id = client.create_experiment("sweep")
    parent = client.create_run(experiment_id, tags={"lightsweep.role": "sweep"}).info.run_id
    _child(client, experiment_id, parent, 0, [(9, 0.80), (19, 0.86)], test_acc=0.99)  # best test: never used
    winner = _child(client, experiment_id, parent, 1, [(9, 0.88), (19, 0.87)], test_acc=0.80)  # best at epoch 1
    _child(client, experiment_id, parent, 2, [(9, 0.95)], test_acc=0.95, status="FAILED")
    # Checkpoints on val/loss (min): the best checkpoint is at step 9, where val/acc is 0.70.
    _child(client, experiment_id, parent, 3, [(9, 0.70), (19, 0.99)], test_acc=0.9, monitor=[(9, 0.1), (19, 0.5)])
    best = best_child(client, parent)
    assert best.run.info.run_id == winner and (best.best.step, best.best.val_acc) == (9, 0.88)


def test_benchmark_best_is_among_its_final_seeded_runs(tmp_path):
    from lightsweep.tracking.best import best_child

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment_id = client.create_experiment("bench")
    parent = client.create_run(experiment_id, tags={"lightsweep.role": "sweep"}).info.run_id
    _child(client, experiment_id, parent, 0, [(4, 0.93)], test_acc=math.nan, stage="tune")  # tuning: validation only
    final = _child(client, experiment_id, parent, 1, [(4, 0.85)], test_acc=0.84, stage="final")
    _child(client, experiment_id, parent, 2, [(4, 0.84)], test_acc=0.85, stage="final")
    assert best_child(client, parent).run.info.run_id == final
    empty = client.create_run(experiment_id, tags={"lightsweep.role": "sweep"}).info.run_id
    with pytest.raises(LightsweepError, match="no FINISHED run"):
        best_child(client, empty)


# --- from a checkpoint, the registry, evaluation -------------------------------------------------------


@needs_fashion_mnist
def test_model_from_the_best_checkpoint_then_registry_alias_and_evaluation(make_cfg, tmp_path, monkeypatch):
    """What a sweep's end and register.py do, in process: a run without a model gets one from its best
    checkpoint; registering moves `champion`; evaluate.py's run is linked to the model."""
    import mlflow

    from lightsweep.tracking.logged_models import log_from_checkpoint, run_model
    from lightsweep.tracking.registry import register, registry_name

    uri = tracking_uri(tmp_path)
    first = train(make_cfg("model=softmax", "seed=1", "log_models=none"))
    second = train(make_cfg("model=softmax", "seed=2"))
    client = MlflowClient(uri)
    run = client.get_run(first["run_id"])
    assert run_model(client, run) is None
    model = log_from_checkpoint(client, run)
    assert run_model(client, client.get_run(run.info.run_id)).model_id == model.model_id
    assert log_from_checkpoint(client, run).model_id == model.model_id  # idempotent
    images, labels = fashion_test_images()
    p = mlflow.pyfunc.load_model(model.model_uri).predict(images)
    assert (p.argmax(axis=1) == labels).mean() == pytest.approx(first["test/acc"], abs=1e-3)

    name = registry_name(run)
    assert name == "fashion_mnist-softmax"
    other = client.get_run(second["run_id"])
    before, elsewhere = mlflow.get_tracking_uri(), f"sqlite:///{tmp_path / 'elsewhere' / 'mlflow.db'}"
    mlflow.set_tracking_uri(elsewhere)  # register() uses its client's store, whatever MLflow's default is
    try:
        v1 = register(client, run, model, name)
        v2 = register(client, other, run_model(client, other), name, extra_tags={"sweep": "s1"})
        assert mlflow.get_tracking_uri() == elsewhere  # and leaves the default as it was
    finally:
        mlflow.set_tracking_uri(before)
    assert client.get_registered_model(name).description.startswith("lightsweep classifier")
    assert (str(v1.version), str(v2.version)) == ("1", "2")
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2"
    assert {str(v.version) for v in client.search_model_versions(f"name = '{name}'")} == {"1", "2"}  # v1 stays
    tags = client.get_model_version(name, "2").tags
    assert (
        tags["run_id"] == other.info.run_id and tags["sweep"] == "s1" and float(tags["test/acc"]) == second["test/acc"]
    )
    # The logged model's page lists the versions it is registered as.
    assert json.loads(client.get_logged_model(model.model_id).tags["mlflow.modelVersions"]) == [
        {"name": name, "version": v1.version}
    ]
    assert str(register(client, run, model, name).version) == "1"  # registered before: no duplicate version
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"

    # evaluate.py, in process: a new run linked to the registered model.
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from lightsweep.evaluate import evaluate

    def eval_cfg(*overrides):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose(
                "evaluate",
                overrides=[
                    *overrides,
                    f"paths.output_dir={tmp_path / 'eval'}",
                    f"paths.mlruns_dir={tmp_path / 'mlruns'}",
                ],
                return_hydra_config=True,
            )
        HydraConfig.instance().set_config(cfg)
        return cfg

    result = evaluate(eval_cfg(f"model_uri=models:/{name}@champion"))
    full_images, full_labels = fashion_test_images(10000)
    p = mlflow.pyfunc.load_model(model.model_uri).predict(full_images)
    assert result["test/acc"] == pytest.approx((p.argmax(axis=1) == full_labels).mean())
    evaluation = client.get_run(result["run_id"])
    assert evaluation.info.status == "FINISHED" and evaluation.data.tags["registered_version"] == "1"
    assert [m.model_id for m in evaluation.inputs.model_inputs] == [model.model_id]
    assert {"test/f1_macro", "test/precision/T-shirt_top", "test/recall/Ankle boot"} <= set(evaluation.data.metrics)
    from helpers import artifact_paths

    assert {"per_class.csv", "plots/confusion_matrix.png", "plots/misclassified.png"} <= artifact_paths(
        client, result["run_id"]
    )
    linked = [m for m in client.get_logged_model(model.model_id).metrics if m.run_id == result["run_id"]]
    assert {m.key for m in linked} >= {"test/acc", "test/f1_macro"}

    runs_before = len(client.search_runs([evaluation.info.experiment_id]))
    with pytest.raises(LightsweepError, match="no such model"):
        evaluate(eval_cfg("model_uri=models:/nothing@champion"))
    with pytest.raises(LightsweepError, match="takes uint8 \\(N, 28, 28\\) samples but data=digits"):
        evaluate(eval_cfg(f"model_uri=models:/{name}@champion", "data=digits"))
    assert len(client.search_runs([evaluation.info.experiment_id])) == runs_before  # refused before any run
    GlobalHydra.instance().clear()
