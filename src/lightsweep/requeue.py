"""Requeueing at SLURM's warning signal: a task continues where it stopped, in the same MLflow runs.

With `hydra.launcher.max_num_timeout` > 0, submitit answers SLURM's warning signal (USR2,
`signal_delay_s` before the time limit, or at a preemption on clusters that send it then) by calling
the launcher's `checkpoint()` (which resubmits the same call), requeueing the job (`scontrol
requeue`) and exiting. Answered where it arrives, the signal would cut an epoch short. `hold()` keeps
it until the next epoch starts (the `RequeueAtEpochStart` callback asks `at_epoch_start()`): by then
the epoch's end has written the checkpoint a run continues from (its last.ckpt, or a vectorized
group's own), and nothing of the next epoch is logged yet. The requeued task (SLURM sets
SLURM_RESTART_COUNT in it) finds its jobs' runs as a resumed sweep's jobs do
(lightsweep.sweeps.context.current_job) and Lightning restarts from that checkpoint: each epoch is
trained once, and logged once (a resumed run's logger skips the steps its run has:
lightsweep.tracking.logger), in one run per job.

When no epoch starts within `wait_s` of the signal (it came during the last epoch or the test, or an
epoch is longer than that), the signal goes to submitit then: the requeued task continues from the
last complete epoch and trains the cut epoch again (its steps already in the store are not logged
again).

While the task is being requeued its runs stay RUNNING (lightsweep.tracking.run.end_run_for): the
requeued task continues them. The requeue ends the task with SIGTERM, which is then not an
interrupt (lightsweep.interrupts.ignore).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

log = logging.getLogger(__name__)

RESTART_COUNT = "SLURM_RESTART_COUNT"  # set by SLURM in a requeued job: how many times it was requeued


class TimeLimitReached(Exception):
    """SLURM's warning signal arrived and the task cannot be requeued: its runs end FAILED, saying so."""


class _State:
    signum: int | None = None
    previous = None  # submitit's handler: checkpoint, requeue, exit
    wait_s = 0.0
    refused = ""  # what a run's failure says when submitit does not requeue (requeued too often)
    received_at: float | None = None
    timer: threading.Timer | None = None
    handed_over = False


_state = _State()


def restarts() -> int:
    """How many times SLURM has requeued this task (0 outside SLURM, and in a task's first run)."""
    try:
        return int(os.environ.get(RESTART_COUNT) or 0)
    except ValueError:
        return 0


def hold(signum: int, wait_s: float, refused: str) -> bool:
    """Hold `signum` (SLURM's warning signal, which submitit handles) until the next epoch starts, or
    `wait_s` seconds; False (nothing held) when submitit has no handler for it here. In the main thread
    of a task that submitit may requeue; `refused` is the failure when it will not requeue."""
    previous = signal.getsignal(signum)
    if not callable(previous):
        return False
    _state.signum, _state.previous, _state.wait_s, _state.refused = signum, previous, float(wait_s), refused
    _state.received_at, _state.timer, _state.handed_over = None, None, False
    signal.signal(signum, _on_signal)
    return True


def release() -> None:
    """The task's work is done: the signal is ignored from here (a finished task is not requeued)."""
    if _state.timer is not None:
        _state.timer.cancel()
    if _state.signum is not None and not _state.handed_over:
        signal.signal(_state.signum, signal.SIG_IGN)
    _state.signum, _state.previous, _state.received_at, _state.timer = None, None, None, None


def holding() -> bool:
    """Whether this process holds SLURM's warning signal (its trainers then get `RequeueAtEpochStart`)."""
    return _state.signum is not None


def at_epoch_start() -> None:
    """An epoch starts: if the warning signal has arrived, hand the task to submitit now (it exits)."""
    if _state.received_at is not None and not _state.handed_over:
        _hand_over(None)


def requeued(err: BaseException) -> bool:
    """`err` is submitit's exit after requeueing this task: its runs go on in the requeued task."""
    return _state.handed_over and isinstance(err, SystemExit)


def _on_signal(signum, frame) -> None:
    if _state.received_at is None:
        _state.received_at = time.monotonic()
        log.warning(
            "SLURM's warning signal (%s): the task is requeued as the next epoch starts (within %.0f s)",
            signal.Signals(signum).name,
            _state.wait_s,
        )
        main = threading.main_thread().ident
        # A timer thread cannot run Python signal handlers; it signals the main thread, which does.
        _state.timer = threading.Timer(_state.wait_s, signal.pthread_kill, (main, signum))
        _state.timer.daemon = True
        _state.timer.start()
        return
    if time.monotonic() - _state.received_at >= _state.wait_s - 1 and not _state.handed_over:
        log.warning(
            "no epoch started within %.0f s: the task is requeued now, from its last complete epoch", _state.wait_s
        )
        _hand_over(frame)


def _hand_over(frame) -> None:
    """submitit's handler: it calls the launcher's `checkpoint()`, requeues the job and exits (SystemExit),
    or raises UncompletedJobError when it will not requeue (requeued `max_num_timeout` times)."""
    from submitit.core.utils import UncompletedJobError

    from lightsweep import interrupts

    _state.handed_over = True
    if _state.timer is not None:
        _state.timer.cancel()
    interrupts.ignore("SIGTERM")  # `scontrol requeue` ends this task with it: not an interrupt
    try:
        _state.previous(_state.signum, frame)
    except UncompletedJobError as err:
        _state.handed_over = False
        interrupts.ignore("SIGTERM", False)
        raise TimeLimitReached(f"{_state.refused} ({err})") from None
