"""No run is ever left RUNNING, whatever raises: faults injected into real CLI processes."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from helpers import PYTHON, QUIET, ROOT, all_runs, artifact_paths, cli_env, run_cli, store, sweep_runs

INJECT = ("tests/reliability/inject.py",)
FAST = ["debug=fast", *QUIET]


def injected(tmp_path, where: str, *overrides: str, sweep: bool = False):
    script = (*INJECT, where, *(["-m"] if sweep else []))
    return run_cli(tmp_path, *overrides, *FAST, script=script)


@pytest.mark.parametrize(
    "where, reason",
    [
        ("lightsweep.models:SoftmaxRegression", "cannot build model"),  # config instantiation
        ("lightsweep.data.idx:IDXImageDataModule.load_splits", "injected failure"),  # data loading
        ("lightsweep.plots:learning_curves", "injected failure"),  # plotting, after training
    ],
    ids=["instantiation", "data-loading", "plotting"],
)
def test_a_failure_anywhere_in_a_run_marks_it_failed(tmp_path, where, reason):
    result = injected(tmp_path, where)
    assert result.returncode != 0
    (run,) = all_runs(store(tmp_path))
    assert run.info.status == "FAILED"
    assert reason in run.data.tags["lightsweep.failure_reason"]
    if "plots" in where:  # training had finished: its checkpoints stay
        assert list((tmp_path / "outputs").glob("runs/*/checkpoints/last.ckpt"))


def test_failing_jobs_fail_their_runs_and_the_sweep_goes_on(tmp_path):
    result = injected(tmp_path, "lightsweep.plots:learning_curves", "optimizer=sgd,adam", sweep=True)
    assert result.returncode == 1
    assert "2 jobs, 2 failed" in result.stdout
    _, parents, children, runs = sweep_runs(tmp_path)
    assert [c.info.status for c in children] == ["FAILED", "FAILED"]
    assert parents[0].info.status == "FAILED"  # every job failed
    assert not [r for r in runs if r.info.status == "RUNNING"]


def test_a_failing_report_fails_the_parent_and_keeps_the_jobs(tmp_path):
    result = injected(tmp_path, "lightsweep.sweeps.report:publish_report", "optimizer=sgd,adam", sweep=True)
    assert result.returncode == 1
    assert "error: the sweep report failed" in result.stderr and "pipelines/compare.py sweep=" in result.stderr
    client, parents, children, _ = sweep_runs(tmp_path)
    assert [c.info.status for c in children] == ["FINISHED", "FINISHED"]
    assert parents[0].info.status == "FAILED"
    assert "report: RuntimeError: injected failure" in parents[0].data.tags["lightsweep.failure_reason"]
    assert all("checkpoints/" in " ".join(artifact_paths(client, c.info.run_id)) for c in children)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_sweep_leaves_nothing_running(tmp_path, stop):
    process = subprocess.Popen(
        [
            PYTHON,
            "train.py",
            "-m",
            f"paths.log_dir={tmp_path}/outputs",
            "optimizer=sgd,adam",
            *QUIET,
            "trainer.max_epochs=50",
            "trainer.limit_train_batches=20",
            "trainer.limit_val_batches=1",
        ],
        cwd=ROOT,
        env=cli_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not list((tmp_path / "outputs").glob("multiruns/*/*/checkpoints/last.ckpt")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + stop.value, stderr[-2000:]
    assert f"interrupted ({stop.name})" in stderr and "the sweep stops" in stderr
    _, parents, children, runs = sweep_runs(tmp_path)
    assert [c.info.status for c in children] == ["KILLED"]  # the second job never started
    assert parents[0].info.status == "FAILED"
    assert parents[0].data.tags["lightsweep.failure_reason"] == "sweep ended before its report"
    assert not [r for r in runs if r.info.status == "RUNNING"]
