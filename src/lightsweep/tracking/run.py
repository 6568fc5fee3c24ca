"""A run's lifecycle, the only owner of its status: created (or reopened) before anything can fail,
ended once, FINISHED only when everything is stored.

The run is created here (not by Lightning's MLFlowLogger, which only logs and flushes) so that
errors outside `trainer.fit` (config instantiation, data loading, plotting) still end it as FAILED,
and Ctrl-C or SIGTERM as KILLED.
"""

from __future__ import annotations

import contextlib
import logging

from lightsweep import interrupts

log = logging.getLogger(__name__)


def create_run(client, experiment_id: str, run_name: str, tags: dict[str, str]) -> str:
    with interrupts.deferred():
        return client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id


def reopen_run(client, run_id: str) -> str:
    """An interrupted run, RUNNING again, its old failure reason dropped (resume)."""
    run = client.get_run(run_id)
    with interrupts.deferred():
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
        end_run_for(client, run_id, err)
        raise
    else:
        end_run(client, run_id, "FINISHED")


def end_run_for(client, run_id: str, err: BaseException) -> None:
    """End `run_id` for `err`: KILLED by an interrupt (acted on: later checks do not raise it again),
    else FAILED with the error as its reason. A SLURM task being requeued leaves its run RUNNING, as the
    requeued task continues it (lightsweep.requeue); the run counts its requeues."""
    from lightsweep import requeue

    if requeue.requeued(err):
        with interrupts.deferred():
            try:
                client.set_tag(run_id, "lightsweep.requeued", str(requeue.restarts() + 1))
            except Exception as tag_err:  # pragma: no cover - store gone; the requeued task goes on anyway
                log.warning("could not tag run %s as requeued: %s", run_id, tag_err)
        return
    if (signal_name := interrupts.interruption(err)) is not None:
        interrupts.acknowledge()
        end_run(client, run_id, "KILLED", f"interrupted ({signal_name})")
    else:
        end_run(client, run_id, "FAILED", f"{type(err).__name__}: {err}".strip())


def end_run(client, run_id: str, status: str, reason: str | None = None) -> None:
    """Set the final status (and reason); a signal meanwhile waits until both are written."""
    with interrupts.deferred():
        try:
            if reason:
                client.set_tag(run_id, "lightsweep.failure_reason", reason[:5000])
            client.set_terminated(run_id, status)
        except Exception as err:  # pragma: no cover - store gone; never hide the original error
            log.warning("could not mark run %s as %s: %s", run_id, status, err)
