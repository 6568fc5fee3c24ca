"""A run's lifecycle: created (or reopened) before anything can fail, always ended with a status.

The run is created here (not by Lightning's MLFlowLogger) so that errors outside `trainer.fit`
(config instantiation, data loading, plotting) still end it as FAILED, and Ctrl-C or SIGTERM as
KILLED.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

log = logging.getLogger(__name__)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that Lightning and the run's lifecycle treat both alike."""


def interruption(err: BaseException | None) -> str | None:
    """"SIGINT"/"SIGTERM" when `err` is, or was raised while handling, an interrupt; else None.

    Lightning answers Ctrl-C with `sys.exit(1)` and SIGTERM with `SIGTERMException` (a SystemExit),
    so the interrupt is often the context of what reaches us.
    """
    from pytorch_lightning.utilities.exceptions import SIGTERMException

    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, (Terminated, SIGTERMException)):
            return "SIGTERM"
        if isinstance(err, KeyboardInterrupt):
            return "SIGINT"
        err = err.__cause__ or err.__context__
    return None


def _raise_terminated(signum, frame):
    raise Terminated


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM raises `Terminated` (default: die on the spot, leaving the run RUNNING)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def create_run(client, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
    return client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id


def reopen_run(client, run_id: str) -> str:
    """An interrupted run, RUNNING again, its old failure reason dropped (resume)."""
    run = client.get_run(run_id)
    if "lightsweep.failure_reason" in run.data.tags:
        client.delete_tag(run_id, "lightsweep.failure_reason")
    client.set_tag(run_id, "lightsweep.resumed", str(int(run.data.tags.get("lightsweep.resumed", "0")) + 1))
    client.update_run(run_id, status="RUNNING")
    return run_id


@contextlib.contextmanager
def tracked_run(client, run_id: str):
    """Ends `run_id` as FINISHED, KILLED (interrupt) or FAILED (anything else, reason as a tag)."""
    try:
        yield run_id
    except BaseException as err:
        if (signal_name := interruption(err)) is not None:
            _end(client, run_id, "KILLED", f"interrupted ({signal_name})")
        else:
            _end(client, run_id, "FAILED", f"{type(err).__name__}: {err}".strip())
        raise
    else:
        _end(client, run_id, "FINISHED")


def _end(client, run_id: str, status: str, reason: str | None = None) -> None:
    # Never let a tracking error hide the original one.
    try:
        if reason:
            client.set_tag(run_id, "lightsweep.failure_reason", reason[:5000])
        client.set_terminated(run_id, status)
    except Exception as err:  # pragma: no cover - store gone
        log.warning("could not mark run %s as %s: %s", run_id, status, err)
