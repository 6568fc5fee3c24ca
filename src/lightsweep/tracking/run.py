"""A run's lifecycle: created before anything can fail, always ended with a status.

The run is created here (not by Lightning's MLFlowLogger) so that errors outside `trainer.fit`
(config instantiation, data loading, plotting) still end it as FAILED, and Ctrl-C as KILLED.
"""

from __future__ import annotations

import contextlib
import logging

log = logging.getLogger(__name__)


@contextlib.contextmanager
def tracked_run(client, experiment_id: str, run_name: str, tags: dict[str, str]):
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    run_id = run.info.run_id
    try:
        yield run
    except KeyboardInterrupt:
        _end(client, run_id, "KILLED", "interrupted")
        raise
    except BaseException as err:
        reason = f"{type(err).__name__}: {err}".strip()
        _end(client, run_id, "FAILED", reason)
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
