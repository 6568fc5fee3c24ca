"""Lightning's MLFlowLogger, with metrics sent to the store in batches, and no say over the run's status.

Lightning calls `log_metrics` at every logged step and at every epoch end; each call is a store
round trip (~4-10 ms on sqlite, more to a server): for a small model that is more than the
training itself. Here metrics are queued with the time they were logged and sent in one
`log_batch` (tracking.batches) once `flush_every_s` seconds have passed since the last send, after every checkpoint,
and when Lightning finishes a fit/validate/test (`finalize`). The store ends up with the same points
(key, value, step, timestamp); they just arrive up to `flush_every_s` late.

Lightning's `finalize` also ends the run (`set_terminated`) after every fit and test and on any
error; here it only flushes: the run's lifecycle (lightsweep.tracking.run) alone ends a run, once
everything is stored. The best checkpoint is uploaded by lightsweep's RunArtifacts callback.

A resumed run (resume=, a resumed sweep's job, a requeued SLURM task) restarts from its last
checkpoint, an epoch's end, and Lightning runs that epoch's end again: what it logs there, and what
the run logged after the checkpoint before it stopped, may be in the store already.
`skip_through(steps)` drops a metric's points at or before its last step in the store
(`last_logged_steps`, per metric: an epoch-end metric logged after the checkpoint may have been lost
with the process while a later step's were sent), so each point is logged once.
"""

from __future__ import annotations

import re
import time
from typing import Any, Mapping

from pytorch_lightning.loggers import mlflow as pl_mlflow
from pytorch_lightning.utilities.rank_zero import rank_zero_only, rank_zero_warn

from lightsweep.tracking.batches import drain


class MLFlowLogger(pl_mlflow.MLFlowLogger):
    def __init__(self, *args: Any, flush_every_s: float = 5.0, prefix: str = "", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.flush_every_s = flush_every_s
        self.metric_prefix = prefix  # handled here, as Lightning does: `{prefix}-{key}`
        self.queue: list = []
        self.last_flush = time.monotonic()
        self.logged_through: dict[str, int] = {}  # a resumed run's last step in the store, per metric

    def skip_through(self, steps: Mapping[str, int]) -> None:
        """Log no point of a metric at or before its step in `steps`: a resumed run has those."""
        self.logged_through = dict(steps)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        timestamp_ms = int(time.time() * 1000)
        for key, value in metrics.items():
            if self.metric_prefix:
                key = f"{self.metric_prefix}{self.LOGGER_JOIN_CHAR}{key}"
            if (step or 0) <= self.logged_through.get(key, -1):
                continue
            if isinstance(value, str):
                rank_zero_warn(f"Discarding metric with string value {key}={value}.")
                continue
            clean = re.sub("[^a-zA-Z0-9_/. -]+", "", key)  # MLflow's allowed characters, as in Lightning
            if clean != key:
                rank_zero_warn(
                    f"MLflow only allows '_', '/', '.' and ' ' special characters in metric name. "
                    f"Replacing {key} with {clean}.",
                    category=RuntimeWarning,
                )
            self.queue.append(Metric(key=clean, value=float(value), timestamp=timestamp_ms, step=step or 0))
        if time.monotonic() - self.last_flush >= self.flush_every_s:
            self.flush()

    @rank_zero_only
    def flush(self) -> None:
        """Send every queued metric now (a Ctrl-C meanwhile is raised once the batch is stored; what a
        failed call did not store stays queued)."""
        drain(self.experiment, self.run_id, self.queue)
        self.last_flush = time.monotonic()

    @rank_zero_only
    def save(self) -> None:
        """Lightning's hook for "store what you have": send the queue."""
        self.flush()

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback) -> None:
        # What a checkpoint saw must be in the store: a run resumed from it after `kill -9` would
        # otherwise miss the points still queued here.
        self.flush()
        super().after_save_checkpoint(checkpoint_callback)

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        """Flush only: the run is not over when a fit or a test is (see the module's docstring)."""
        self.flush()


def last_logged_steps(client, run_id: str) -> dict[str, int]:
    """Each metric's highest step in the store for the run."""
    keys = client.get_run(run_id).data.metrics
    return {key: max(point.step for point in client.get_metric_history(run_id, key)) for key in keys}
