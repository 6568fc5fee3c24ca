"""Security: checkpoints load with weights_only=True; no secret reaches MLflow; a run's stored config
builds only what a training config may name, and paths from the store are not loaded.

In-process runs of the real config (`lightsweep.cli.task`, as `python train.py` runs it); a sweep's
secrets: test_sweep.py::test_optimizer_sweep_lands_as_parent_with_children_and_report.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest
import torch
from helpers import (
    CONF,
    SECRET_ENV,
    SECRET_OVERRIDES,
    TINY,
    all_runs,
    artifact_paths,
    assert_short_error,
    cli_env,
    cli_error,
    everything_logged,
    run_in_process,
)
from helpers import tracking_uri as local_uri
from mlflow.tracking import MlflowClient

from lightsweep.train import train


class RunsCode:
    """Unpickling this runs a shell command: what a crafted checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_is_refused_and_runs_no_code(make_cfg, capsys, tmp_path):
    marker = tmp_path / "code-ran"
    crafted = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "payload": RunsCode(marker)}, crafted)
    line = cli_error(make_cfg(f"ckpt_path={crafted}", *TINY), capsys)
    assert f"refusing to load {crafted}" in line and "only load checkpoints you trust" in line
    assert not marker.exists()
    assert [r.info.status for r in all_runs(MlflowClient(local_uri(tmp_path)))] == ["FAILED"]


def test_no_secret_from_the_environment_or_the_config_is_logged(make_cfg, monkeypatch, tmp_path):
    for name, value in SECRET_ENV.items():
        monkeypatch.setenv(name, value)
    metrics = train(make_cfg(*SECRET_OVERRIDES, *TINY))
    client = MlflowClient(local_uri(tmp_path))
    (run,) = all_runs(client)
    assert run.info.run_id == metrics["run_id"] and run.info.status == "FINISHED"
    assert run.data.params["service.password"] == "***" and run.data.tags["api_token"] == "***"
    assert run.data.params["service.db_uri"] == "postgresql://user:***@db.example/mlflow"
    logged = everything_logged(client, tmp_path)
    assert "config.yaml" in artifact_paths(client, run.info.run_id)
    assert "secret-" not in logged


# --- stored configs are data: lightsweep.allowlist -----------------------------------------------------
# A run's config.yaml in MLflow can be replaced by anyone who may edit the experiment; building a model
# from it (register.py, a sweep's best model) must call nothing a training config would not name.
QUIET_TINY = ["data=iris", "log_models=none", *TINY]


def write_payload(marker) -> dict:
    """What Hydra's blocklist lets through: pathlib writes `marker` (a .pth file would run at every start)."""
    return {
        "_target_": "pathlib.Path.write_text",
        "_args_": [{"_target_": "pathlib.Path", "_args_": [str(marker)]}, "x"],
    }


def crafted_models(marker) -> dict[str, tuple[dict, str]]:
    """name -> (the crafted `model:` node, the key the refusal must name)."""
    model = {"_target_": "lightsweep.models.SoftmaxRegression", "input_dim": 4, "num_classes": 3}
    return {
        "nested": ({**model, "label_smoothing": write_payload(marker)}, "model.label_smoothing._target_"),
        "args": ({**model, "_args_": [write_payload(marker)]}, "model._args_[0]._target_"),
        "partial": ({**write_payload(marker), "_partial_": True}, "model._target_"),
        "inner": ({**model, "loss": [{"x": write_payload(marker)}]}, "model.loss[0].x._target_"),
        "imported": ({**model, "_target_": "lightsweep.config.Path", "_args_": [str(marker)]}, "model._target_"),
        "store": (  # lightsweep's own logger opens (creates) a sqlite store wherever it is told
            {
                **model,
                "loss": {"_target_": "lightsweep.tracking.logger.MLFlowLogger", "tracking_uri": f"sqlite:///{marker}"},
            },
            "model.loss._target_",
        ),
        "interpolation": ({**model, "input_dim": "${oc.env:HOME}"}, "model.input_dim"),
    }


@pytest.fixture
def modelless_run(make_cfg, tmp_path):
    """A finished run without a logged model (as every sweep child by default): (client, run)."""
    metrics = train(make_cfg(*QUIET_TINY))
    client = MlflowClient(local_uri(tmp_path))
    return client, client.get_run(metrics["run_id"])


def tamper(client, run_id: str, **nodes) -> None:
    """Replace the run's config.yaml artifact, as an editor of the experiment can."""
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        config = yaml.safe_load(open(client.download_artifacts(run_id, "config.yaml", tmp)))
    config.update(nodes)
    client.log_text(run_id, yaml.safe_dump(config), "config.yaml")


def test_the_payload_writes_a_file_through_plain_hydra(tmp_path):
    """The control: the crafted targets do what they would do, unless something stops them."""
    from hydra.utils import instantiate

    marker = tmp_path / "control.pth"
    instantiate(write_payload(marker))
    assert marker.read_text() == "x"


def test_a_crafted_stored_config_is_refused_before_anything_is_built(modelless_run, tmp_path):
    from lightsweep.allowlist import UntrustedConfig
    from lightsweep.tracking.logged_models import log_from_checkpoint

    client, run = modelless_run
    marker = tmp_path / "site-packages" / "evil.pth"
    marker.parent.mkdir()
    for name, (model, key) in crafted_models(marker).items():
        tamper(client, run.info.run_id, model=model)
        with pytest.raises(UntrustedConfig, match=re.escape(f"config.yaml: {key}=")) as info:
            log_from_checkpoint(client, run)
        assert "\n" not in str(info.value) and ("allowed_targets" in str(info.value) or name == "interpolation")
        assert list(marker.parent.iterdir()) == [], name
        assert client.search_logged_models([run.info.experiment_id]) == [], name

    # The user's own list extends the allowlist: what they trust is built (the payload runs: that is trust).
    tamper(client, run.info.run_id, model=crafted_models(marker)["nested"][0])
    model = log_from_checkpoint(client, run, ["pathlib.*"])
    assert marker.read_text() == "x" and model.source_run_id == run.info.run_id


def test_register_refuses_a_crafted_config_in_one_line(modelless_run, tmp_path):
    """`pipelines/register.py run=<id>` (its entry, in this process): exit 2, one line naming the key, no file
    written."""
    client, run = modelless_run
    marker = tmp_path / "evil.pth"
    tamper(client, run.info.run_id, model=crafted_models(marker)["nested"][0])
    env = {**cli_env(tmp_path), "MLFLOW_TRACKING_URI": local_uri(tmp_path)}
    refused = run_in_process(tmp_path, f"run={run.info.run_id}", env=env, script=("pipelines/register.py",))
    assert refused.returncode == 2
    assert_short_error(refused, "model.label_smoothing._target_=pathlib.Path.write_text", "allowed_targets=")
    assert refused.stderr.strip().splitlines()[-1].startswith(f"error: refusing run {run.info.run_id}'s config.yaml")
    assert not marker.exists() and client.search_logged_models([run.info.experiment_id]) == []


def test_the_model_is_built_from_the_uploaded_checkpoint_not_a_path_the_config_names(modelless_run, tmp_path):
    import mlflow
    import numpy as np

    from lightsweep.tracking.logged_models import log_from_checkpoint

    client, run = modelless_run
    (uploaded,) = [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")]
    planted = tmp_path / "elsewhere"
    planted.mkdir()
    torch.save({"state_dict": {"net.linear.weight": torch.full((3, 4), 100.0)}}, planted / Path(uploaded).name)
    tamper(client, run.info.run_id, callbacks={"model_checkpoint": {"dirpath": str(planted)}})

    model = log_from_checkpoint(client, run)
    with tempfile.TemporaryDirectory() as tmp:
        state = torch.load(client.download_artifacts(run.info.run_id, uploaded, tmp), weights_only=True)
    (weight,) = [p for p in mlflow.pytorch.load_model(model.model_uri).parameters() if p.shape == (3, 4)]
    assert np.allclose(weight.detach().numpy(), state["state_dict"]["net.linear.weight"].numpy())


def test_resume_loads_no_checkpoint_from_outside_the_outputs(make_cfg, capsys, tmp_path):
    """A run created by someone else, naming a checkpoint folder elsewhere: resume=last refuses it."""
    client = MlflowClient(local_uri(tmp_path))
    experiment = client.create_experiment("lightsweep")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "last.ckpt").write_bytes(b"planted")
    crafted = client.create_run(experiment).info.run_id
    client.log_param(crafted, "callbacks.model_checkpoint.dirpath", str(elsewhere))
    line = cli_error(make_cfg(*TINY, "resume=last"), capsys)
    assert f"run {crafted} keeps its checkpoints in {elsewhere}, outside this project's outputs" in line
    assert sorted(p.name for p in elsewhere.iterdir()) == ["last.ckpt"]
    assert (elsewhere / "last.ckpt").read_bytes() == b"planted"


@pytest.mark.parametrize(
    "key, value",
    [
        (
            "data.classes",
            "[{_target_: pathlib.Path.write_text, _args_: [{_target_: pathlib.Path, _args_: [MARKER]}, x]}]",
        ),
        (
            "data.positive_class",
            "${oc.create:{_target_: pathlib.Path.touch, _args_: [{_target_: pathlib.Path, _args_: [MARKER]}]}}",
        ),
    ],
)
def test_evaluate_takes_a_models_stored_task_as_data_only(tmp_path, monkeypatch, key, value):
    """A binary model's params name the task evaluate.py picks on a multi-class set; anyone who may edit the
    experiment can log a model with params of their choosing: a nested node or an interpolation is refused."""
    import numpy as np
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from lightsweep.errors import LightsweepError
    from lightsweep.evaluate import evaluate
    from lightsweep.models.networks import LinearNet
    from lightsweep.tracking.logged_models import log_model
    from lightsweep.tracking.serving import InputSpec
    from lightsweep.tracking.store import ensure_experiment, open_store

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    marker = tmp_path / "evil.pth"
    uri = local_uri(tmp_path)
    client = open_store(uri)
    crafted = client.create_run(ensure_experiment(client, uri, "crafted")).info.run_id
    client.log_param(crafted, key, value.replace("MARKER", str(marker)))
    spec = InputSpec("float32", (4,), None, 0.0, 1.0, ["no", "yes"], True, np.zeros((4, 4), np.float32))
    model = log_model(client, crafted, LinearNet(4, 1), spec)  # a binary model for iris's 4 features

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "evaluate",
            overrides=[f"model_uri=models:/{model.model_id}", "data=iris", f"paths.output_dir={tmp_path / 'eval'}"]
            + [f"paths.mlruns_dir={tmp_path / 'mlruns'}"],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    try:
        with pytest.raises(LightsweepError, match=re.escape(f"the model's stored param {key}=")) as info:
            evaluate(cfg)
    finally:
        GlobalHydra.instance().clear()
    assert "\n" not in str(info.value) and "data.classes=[a,b]" in str(info.value)
    assert not marker.exists()
    assert [r.info.run_id for r in all_runs(client)] == [crafted]  # refused before an evaluation run
