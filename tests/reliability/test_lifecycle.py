"""No run is ever left RUNNING, whatever raises: faults injected through the config (inject.FailAt),
in-process for one run and for the jobs of a sweep (`python train.py -m`'s entry, helpers.sweep_in_process);
a sweep's own process interrupted by a signal."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from helpers import (
    PYTHON,
    QUIET,
    ROOT,
    TINY,
    all_runs,
    cli_env,
    cli_error,
    seed_store,
    sweep_in_process,
    sweep_runs,
    tracking_uri,
)
from inject import FAIL_ENV, fail_at
from mlflow.tracking import MlflowClient

from lightsweep.cli import task


@pytest.mark.parametrize(
    "hook",
    ["__init__", "setup", "on_train_batch_end", "on_fit_end", "on_test_end"],
    ids=["instantiation", "after-data-loading", "training", "after-training", "testing"],
)
def test_a_failure_anywhere_in_a_run_marks_it_failed(make_cfg, capsys, tmp_path, hook):
    """A RuntimeError (a bug, not a LightsweepError) anywhere in `python train.py`'s run (lightsweep.cli.task):
    the run is FAILED with the reason. Data loading's own errors: test_bad_input, test_train."""
    cfg = make_cfg(*TINY, *fail_at(hook))
    if hook == "__init__":  # a config that cannot be built is the user's to fix: one line, exit 2
        assert "cannot build callbacks.fail" in cli_error(cfg, capsys)
    else:  # a bug keeps its traceback (Hydra prints it, exit 1)
        with pytest.raises(RuntimeError, match=f"injected failure in {hook}"):
            task(cfg)
    (run,) = all_runs(MlflowClient(tracking_uri(tmp_path)))
    assert run.info.status == "FAILED"
    assert f"injected failure in {hook}" in run.data.tags["lightsweep.failure_reason"]
    # Training had finished: its checkpoints stay.
    assert (tmp_path / "out" / "checkpoints" / "last.ckpt").is_file() == (hook in ("on_fit_end", "on_test_end"))


def test_jobs_failing_in_any_way_fail_their_runs_and_the_sweep_goes_on(tmp_path):
    """One sweep whose jobs fail three ways, then one that works: a diverging lr, a bad value (validated
    inside the job, not while Hydra composes, which would abort the launcher) and a bug after training
    are each a FAILED child with its reason; the job after them runs; the sweep exits 1."""
    result = sweep_in_process(
        tmp_path,
        "model=mlp",
        "optimizer=sgd",
        "optimizer.lr=1e12,-1,0.2,0.05",
        *fail_at("on_fit_end", value="${optimizer.lr}", when=0.2),
        *TINY,
        env=cli_env(tmp_path, **FAIL_ENV),
    )
    assert result.returncode == 1, result.stderr[-2000:]  # the sweep says that jobs failed ...
    assert "4 jobs, 3 failed (1 diverged)" in result.stdout
    client, parents, children, runs = sweep_runs(tmp_path)
    status = {c.data.tags["lightsweep.job"]: (c.info.run_name, c.info.status) for c in children}
    # ... and the job after the failing ones still ran.
    assert status == {
        "0": ("mlp-sgd-lr1e+12-s42", "FAILED"),
        "1": ("mlp-sgd-lr-1-s42", "FAILED"),
        "2": ("mlp-sgd-lr0.2-s42", "FAILED"),
        "3": ("mlp-sgd-lr0.05-s42", "FINISHED"),
    }
    reasons = {c.data.tags["lightsweep.job"]: c.data.tags.get("lightsweep.failure_reason", "") for c in children}
    diverged = next(c for c in children if c.data.tags["lightsweep.job"] == "0")
    assert diverged.data.tags["lightsweep.diverged"] == "true" and "diverged" in reasons["0"]
    assert "optimizer.lr must be > 0" in reasons["1"]
    assert "injected failure in on_fit_end" in reasons["2"]
    # The job that failed after training keeps its checkpoints (in its own dir).
    assert list((tmp_path / "outputs").glob("multiruns/*/2-optimizer.lr=0.2/checkpoints/last.ckpt"))
    assert parents[0].info.status == "FINISHED"  # not every job failed
    assert not [r for r in runs if r.info.status == "RUNNING"]
    report = open(client.download_artifacts(parents[0].info.run_id, "report/report.md", str(tmp_path))).read()
    assert "| mlp-sgd-lr1e+12 | 1 |" in report and "yes (1/1)" in report


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_sweep_leaves_nothing_running(tmp_path, stop):
    """A sweep's own process: the signal comes after the first job's first epoch (of 1000: it would run
    for minutes), on a store that exists (helpers.seed_store)."""
    seed_store(tmp_path / "store" / "mlflow.db")
    process = subprocess.Popen(
        [
            PYTHON,
            "train.py",
            "-m",
            f"paths.log_dir={tmp_path}/outputs",
            "data=digits",
            "optimizer=sgd,adam",
            *QUIET,
            "trainer.max_epochs=1000",
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
