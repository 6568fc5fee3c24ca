"""Crash, interrupt and resume: real processes, real signals, a real sqlite store in tmp_path."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
import torch
from helpers import PYTHON, QUIET, ROOT, all_runs, assert_short_error, cli_env, run_cli, store

# Several full CLI runs each (about a minute per test on 2 cores): the slow tier, which CI runs too.
pytestmark = pytest.mark.slow

EPOCHS, STEPS = 10, 40
# An MLP (dropout draws random numbers) on a slice, deterministic on CPU: a resumed run must end
# exactly where an uninterrupted one does.
RESUMABLE = [
    "model=mlp",
    "trainer.deterministic=true",
    f"trainer.max_epochs={EPOCHS}",
    f"trainer.limit_train_batches={STEPS}",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=3",
    "trainer.log_every_n_steps=10",
    *QUIET,
]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, float]:
    tmp_path = tmp_path_factory.mktemp("uninterrupted")
    result = run_cli(tmp_path, *RESUMABLE)
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = all_runs(store(tmp_path))
    return run.data.metrics


def start_and_stop_mid_training(tmp_path, stop: signal.Signals, *extra: str) -> subprocess.CompletedProcess:
    """Start a run, wait for its first end-of-epoch checkpoint, then send `stop` (training is mid-epoch)."""
    process = subprocess.Popen(
        [PYTHON, "train.py", f"paths.log_dir={tmp_path}/outputs", *RESUMABLE, *extra],
        cwd=ROOT,
        env=cli_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not list((tmp_path / "outputs").glob("runs/*/checkpoints/last.ckpt")):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.02)
    process.send_signal(stop)
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def the_run(tmp_path):
    client = store(tmp_path)
    (run,) = all_runs(client)  # never a second run
    return client, run


def assert_complete_history(client, run) -> None:
    """Every epoch has its points (an epoch re-run after the crash may have logged twice)."""
    epoch_ends = {STEPS * (epoch + 1) - 1 for epoch in range(EPOCHS)}
    for key in ("val/acc", "val/loss", "train/loss_epoch", "train/acc"):
        assert {m.step for m in client.get_metric_history(run.info.run_id, key)} == epoch_ends, key


def test_kill_9_then_resume_last_continues_the_same_run(tmp_path, uninterrupted):
    killed = start_and_stop_mid_training(tmp_path, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL  # it really died mid-training
    _, run = the_run(tmp_path)
    assert run.info.status == "RUNNING"  # nobody could mark it: that is what resume is for

    resumed = run_cli(tmp_path, *RESUMABLE, "resume=last")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    client, after = the_run(tmp_path)
    assert after.info.run_id == run.info.run_id and after.info.status == "FINISHED"
    assert after.data.tags["lightsweep.resumed"] == "1"
    assert_complete_history(client, after)
    assert after.data.metrics["test/acc"] == uninterrupted["test/acc"]
    assert after.data.metrics["val/loss"] == uninterrupted["val/loss"]
    # The run kept its checkpoint folder: one folder of checkpoints, the resumed best among them.
    (folder,) = {p.parent for p in (tmp_path / "outputs").glob("runs/*/checkpoints/*.ckpt")}
    assert (folder / "last.ckpt").is_file()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_interrupt_writes_a_checkpoint_and_marks_the_run_killed(tmp_path, uninterrupted, stop):
    interrupted = start_and_stop_mid_training(tmp_path, stop)
    assert interrupted.returncode == 128 + stop.value
    assert_short_error(interrupted, f"interrupted ({stop.name})", "resume=last")
    client, run = the_run(tmp_path)
    assert run.info.status == "KILLED"
    assert run.data.tags["lightsweep.failure_reason"] == f"interrupted ({stop.name})"
    (checkpoint,) = (tmp_path / "outputs").glob("runs/*/checkpoints/interrupted.ckpt")
    assert "state_dict" in torch.load(checkpoint, weights_only=True)

    # A changed hyperparameter is refused in one line; the run is left as it was.
    changed = run_cli(tmp_path, *RESUMABLE, "optimizer.lr=0.01", f"resume={run.info.run_id}")
    assert_short_error(changed, f"cannot resume run {run.info.run_id}", "optimizer.lr=0.01 (run has 0.001)")
    assert the_run(tmp_path)[1].info.status == "KILLED"

    # resume=<run id> and Lightning's spelling ckpt_path=last both continue it.
    how = f"resume={run.info.run_id}" if stop == signal.SIGTERM else "ckpt_path=last"
    resumed = run_cli(tmp_path, *RESUMABLE, how)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    client, after = the_run(tmp_path)
    assert after.info.status == "FINISHED" and "lightsweep.failure_reason" not in after.data.tags
    assert_complete_history(client, after)
    assert after.data.metrics["test/acc"] == uninterrupted["test/acc"]


def test_resume_refuses_what_it_cannot_continue(tmp_path):
    finished = run_cli(tmp_path, "debug=fast", *QUIET)
    assert finished.returncode == 0, finished.stderr[-2000:]
    _, run = the_run(tmp_path)
    again = run_cli(tmp_path, "debug=fast", *QUIET, f"resume={run.info.run_id}")
    assert_short_error(again, f"run {run.info.run_id} already finished")
    unknown = run_cli(tmp_path, "debug=fast", *QUIET, "resume=0123456789abcdef")
    assert_short_error(unknown, "resume=0123456789abcdef: no such MLflow run")
    nothing = run_cli(tmp_path, "debug=fast", *QUIET, "resume=last")
    assert_short_error(nothing, "no interrupted run with checkpoints")
    assert [r.info.status for r in all_runs(store(tmp_path))] == ["FINISHED"]
