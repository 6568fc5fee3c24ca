"""Requeueing at SLURM's warning signal, in one process: the signal is held until an epoch starts (or a
deadline), then handed to submitit's handler (here a stand-in that exits as submitit does after
`scontrol requeue`); the runs of a task being requeued stay RUNNING; a resumed run's logger skips the
steps its run has. Real signals, a real sqlite store in tmp_path. The cluster round trip is in
tests/test_slurm.py."""

from __future__ import annotations

import os
import signal
import time

import pytest
from submitit.core.utils import UncompletedJobError

from lightsweep import interrupts, requeue

SIG = signal.SIGUSR2


class Submitit:
    """Stands in for submitit's handler: counts its calls, then exits as submitit does once it has
    requeued the job (or refuses, as when the job was requeued max_num_timeout times)."""

    def __init__(self, refuse: bool = False):
        self.calls, self.refuse = 0, refuse

    def __call__(self, signum, frame):
        self.calls += 1
        if self.refuse:
            raise UncompletedJobError("Job not requeued because: timed-out too many times.")
        raise SystemExit(-1)


@pytest.fixture
def submitit_handler():
    handler = Submitit()
    previous = signal.signal(SIG, handler)
    yield handler
    requeue.release()
    signal.signal(SIG, previous)
    interrupts.ignore("SIGTERM", False)


def test_the_signal_waits_for_the_next_epoch_then_goes_to_submitit(submitit_handler):
    assert requeue.hold(SIG, wait_s=30, refused="not requeued") and requeue.holding()
    requeue.at_epoch_start()  # no signal yet: nothing happens
    os.kill(os.getpid(), SIG)
    assert submitit_handler.calls == 0  # held: the epoch goes on
    with pytest.raises(SystemExit) as exit_info:
        requeue.at_epoch_start()
    assert submitit_handler.calls == 1
    assert requeue.requeued(exit_info.value)  # the task's runs stay RUNNING
    assert not requeue.requeued(RuntimeError("another error"))
    # `scontrol requeue` ends the task with SIGTERM: not an interrupt any more
    with interrupts.handled():
        os.kill(os.getpid(), signal.SIGTERM)
        assert interrupts.received() is None


def test_without_an_epoch_start_the_signal_goes_to_submitit_at_the_deadline(submitit_handler):
    requeue.hold(SIG, wait_s=0.5, refused="not requeued")
    os.kill(os.getpid(), SIG)
    started = time.monotonic()
    with pytest.raises(SystemExit):
        while time.monotonic() - started < 10:  # the timer thread signals the main thread
            time.sleep(0.05)
    assert submitit_handler.calls == 1 and 0.4 < time.monotonic() - started < 5


def test_a_task_submitit_will_not_requeue_fails_saying_what_to_raise():
    handler = Submitit(refuse=True)
    previous = signal.signal(SIG, handler)
    try:
        requeue.hold(SIG, wait_s=30, refused="requeued 2 times: raise hydra.launcher.max_num_timeout")
        os.kill(os.getpid(), SIG)
        with pytest.raises(requeue.TimeLimitReached, match="raise hydra.launcher.max_num_timeout") as failure:
            requeue.at_epoch_start()
        assert not requeue.requeued(failure.value)  # its runs end FAILED, with that reason
    finally:
        requeue.release()
        signal.signal(SIG, previous)


def test_a_finished_task_ignores_the_signal(submitit_handler):
    requeue.hold(SIG, wait_s=30, refused="")
    requeue.release()
    assert not requeue.holding() and signal.getsignal(SIG) == signal.SIG_IGN
    os.kill(os.getpid(), SIG)  # ignored: nothing raised, submitit not called
    assert submitit_handler.calls == 0


def test_nothing_is_held_where_submitit_does_not_handle_the_signal():
    previous = signal.signal(SIG, signal.SIG_DFL)
    try:
        assert not requeue.hold(SIG, wait_s=30, refused="") and not requeue.holding()
    finally:
        signal.signal(SIG, previous)


def test_a_requeued_tasks_run_stays_running_and_counts_its_requeues(tmp_path, submitit_handler, monkeypatch):
    from mlflow.tracking import MlflowClient

    from lightsweep.tracking.run import create_run, end_run_for

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("requeue")
    run_id = create_run(client, experiment, "job", {})
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # its second time on the node
    requeue.hold(SIG, wait_s=30, refused="")
    os.kill(os.getpid(), SIG)
    with pytest.raises(SystemExit) as exit_info:
        requeue.at_epoch_start()
    end_run_for(client, run_id, exit_info.value)
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING" and run.data.tags["lightsweep.requeued"] == "2"
    other = create_run(client, experiment, "other", {})
    end_run_for(client, other, RuntimeError("boom"))  # any other error still fails its run
    assert client.get_run(other).info.status == "FAILED"


def test_a_resumed_runs_logger_logs_no_step_twice(tmp_path):
    from mlflow.tracking import MlflowClient

    from lightsweep.tracking.logger import MLFlowLogger, last_logged_steps

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("resume")).info.run_id
    first = MLFlowLogger(tracking_uri=uri, run_id=run_id)
    for step in (4, 9):
        first.log_metrics({"train/loss": 1.0 / step}, step=step)
    first.log_metrics({"val/acc": 0.5, "epoch": 0}, step=9)
    first.finalize()
    assert last_logged_steps(client, run_id) == {"train/loss": 9, "val/acc": 9, "epoch": 9}

    resumed = MLFlowLogger(tracking_uri=uri, run_id=run_id)
    resumed.skip_through(last_logged_steps(client, run_id))
    resumed.log_metrics({"val/acc": 0.5, "epoch": 0}, step=9)  # the checkpoint's epoch end, run again
    # logged after the checkpoint and lost with the process (kill -9) before it was sent: logged now
    resumed.log_metrics({"train/loss_epoch": 0.3}, step=9)
    resumed.log_metrics({"train/loss": 0.07}, step=14)
    resumed.finalize()
    assert [m.step for m in client.get_metric_history(run_id, "val/acc")] == [9]
    assert [m.step for m in client.get_metric_history(run_id, "train/loss_epoch")] == [9]
    assert [m.step for m in client.get_metric_history(run_id, "train/loss")] == [4, 9, 14]
