"""The command line as a user runs it: real subprocesses, a real store in tmp_path."""

from __future__ import annotations

import os
import subprocess

import pytest
from mlflow.tracking import MlflowClient

from helpers import PYTHON, ROOT, artifact_paths

QUIET = ["trainer.enable_progress_bar=false", "callbacks.progress_bar=null"]


def run_cli(tmp_path, *overrides: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/store/mlflow.db"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [PYTHON, "train.py", f"paths.log_dir={tmp_path}/outputs", *overrides],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )


def store(tmp_path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp_path}/store/mlflow.db")


def test_cli_trains_and_prints_how_to_review(tmp_path):
    result = run_cli(tmp_path, "debug=fast", "seed=5", *QUIET)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test/acc=" in result.stdout
    ui_line = f"mlflow ui --backend-store-uri sqlite:///{tmp_path}/store/mlflow.db"
    assert ui_line in result.stdout

    client = store(tmp_path)
    (run,) = client.search_runs([client.get_experiment_by_name("lightsweep").experiment_id])
    assert run.info.run_id in result.stdout
    assert run.info.status == "FINISHED" and run.info.run_name == "softmax-adam-s5"
    assert "debug=fast" in run.data.tags["overrides"]
    assert f"test/acc={run.data.metrics['test/acc']:.4f}" in result.stdout
    assert "plots/weights.png" in artifact_paths(client, run.info.run_id)
    # Checkpoints went to this run's own output dir.
    assert list((tmp_path / "outputs" / "runs").glob("*/checkpoints/last.ckpt"))


def _assert_short_error(result, *needles):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) <= 15, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_unknown_group_option(tmp_path):
    result = run_cli(tmp_path, "model=resnet")
    _assert_short_error(result, "model/resnet", "softmax")  # names the option and lists the valid ones


@pytest.mark.parametrize(
    "override, needle",
    [
        ("optimizer.lr=-1", "optimizer.lr must be > 0"),
        ("optimizer.lr=abc", "optimizer.lr must be a number"),
        ("model.hidden_sizes=[]", "model.hidden_sizes must be a non-empty list"),
    ],
)
def test_bad_value_is_one_line_and_starts_nothing(tmp_path, override, needle):
    overrides = ["model=mlp", override] if "hidden" in override else [override]
    result = run_cli(tmp_path, *overrides)
    _assert_short_error(result, needle)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0  # exactly one line
    assert not (tmp_path / "store").exists()  # refused before any run was created


def test_missing_data_fails_the_run_with_the_fixes(tmp_path):
    result = run_cli(tmp_path, f"data.root={tmp_path}/nodata", "data.local_copies=[]", *QUIET)
    _assert_short_error(result, "make setup", "data.download=true")
    client = store(tmp_path)
    (run,) = client.search_runs([client.get_experiment_by_name("lightsweep").experiment_id])
    assert run.info.status == "FAILED"


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_logs_one_run(tmp_path):
    result = run_cli(tmp_path, "trainer=ddp_cpu", "debug=fast", *QUIET)
    assert result.returncode == 0, result.stderr[-2000:]
    client = store(tmp_path)
    (run,) = client.search_runs([client.get_experiment_by_name("lightsweep").experiment_id])  # rank 1 made none
    assert run.info.status == "FINISHED" and run.data.params["trainer.devices"] == "2"
    assert len(client.get_metric_history(run.info.run_id, "val/acc")) == 1
    assert "plots/confusion_matrix.png" in artifact_paths(client, run.info.run_id)
