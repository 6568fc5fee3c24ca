"""Metrics and params to a run in `log_batch` calls: MLflow's limits per call and the interrupt rule, once.

Every writer of metric or param lists goes through here: the training logger's queue
(tracking.logger), a run's config (tracking.setup), an evaluation's scores (evaluate), the metric
links of a logged model (tracking.logged_models), a sweep's own params (its parent run, the optimizer
benchmark's chosen learning rates). A Ctrl-C or SIGTERM meanwhile is raised once the lists are stored
(lightsweep.interrupts.deferred): a batch is never cut in the middle.
"""

from __future__ import annotations

from typing import Iterable

from lightsweep import interrupts

MAX_METRICS = 1000  # MLflow's limits for one log_batch call
MAX_PARAMS = 100


def log_batch(client, run_id: str, metrics: Iterable = (), params: Iterable = ()) -> None:
    """Log `metrics` (mlflow.entities.Metric) and `params` (Param) to the run, in as few calls as MLflow allows."""
    drain(client, run_id, list(metrics), list(params))


def drain(client, run_id: str, metrics: list, params: list | None = None) -> None:
    """`log_batch`, taking each call's share off the front of the lists once it is stored: after an
    error, the lists hold what was not (a logger's queue keeps it for the next flush)."""
    params = params if params is not None else []
    with interrupts.deferred():
        for pending, kind, limit in ((params, "params", MAX_PARAMS), (metrics, "metrics", MAX_METRICS)):
            while pending:
                chunk = pending[:limit]
                client.log_batch(run_id, **{kind: chunk})
                del pending[: len(chunk)]
