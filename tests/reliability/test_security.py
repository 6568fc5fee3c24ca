"""Security: checkpoints load with weights_only=True; no secret reaches MLflow.

In-process runs of the real config (`lightsweep.cli.task`, as `python train.py` runs it); a sweep's
secrets: test_sweep.py::test_optimizer_sweep_lands_as_parent_with_children_and_report.
"""

from __future__ import annotations

import os

import torch
from helpers import SECRET_ENV, SECRET_OVERRIDES, TINY, all_runs, artifact_paths, cli_error, everything_logged
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
