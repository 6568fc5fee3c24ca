"""Lightning's MLFlowLogger, with metrics sent to the store in batches.

Lightning calls `log_metrics` at every logged step and at every epoch end; each call is a store
round trip (~4-10 ms on sqlite, more to a server): for a small model that is more than the
training itself. Here metrics are queued with the time they were logged and sent in one
`log_batch` once `flush_every_s` seconds have passed since the last send, and always when Lightning
finishes a fit/validate/test (`finalize`, on success, error or Ctrl-C). The store ends up with the
same points (key, value, step, timestamp); they just arrive up to `flush_every_s` late.
"""

from __future__ import annotations

import re
import time
from typing import Any, Mapping

from lightning_fabric.utilities.logger import _add_prefix
from pytorch_lightning.loggers import mlflow as pl_mlflow
from pytorch_lightning.utilities.rank_zero import rank_zero_only, rank_zero_warn

MAX_METRICS_PER_BATCH = 1000  # MLflow's limit for one log_batch


class MLFlowLogger(pl_mlflow.MLFlowLogger):
    def __init__(self, *args: Any, flush_every_s: float = 5.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.flush_every_s = flush_every_s
        self._queue: list = []
        self._last_flush = time.monotonic()

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        timestamp_ms = int(time.time() * 1000)
        for key, value in _add_prefix(metrics, self._prefix, self.LOGGER_JOIN_CHAR).items():
            if isinstance(value, str):
                rank_zero_warn(f"Discarding metric with string value {key}={value}.")
                continue
            clean = re.sub("[^a-zA-Z0-9_/. -]+", "", key)  # MLflow's allowed characters, as in Lightning
            if clean != key:
                rank_zero_warn(f"MLflow only allows '_', '/', '.' and ' ' special characters in metric name. "
                               f"Replacing {key} with {clean}.", category=RuntimeWarning)
            self._queue.append(Metric(key=clean, value=value, timestamp=timestamp_ms, step=step or 0))
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    @rank_zero_only
    def flush(self) -> None:
        """Send every queued metric now."""
        while self._queue:
            batch = self._queue[:MAX_METRICS_PER_BATCH]
            self.experiment.log_batch(run_id=self.run_id, metrics=batch, **self._log_batch_kwargs)
            del self._queue[: len(batch)]
        self._last_flush = time.monotonic()

    @rank_zero_only
    def after_save_checkpoint(self, checkpoint_callback) -> None:
        # What a checkpoint saw must be in the store: a run resumed from it after `kill -9` would
        # otherwise miss the points still queued here.
        self.flush()
        super().after_save_checkpoint(checkpoint_callback)

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        self.flush()
        super().finalize(status)
