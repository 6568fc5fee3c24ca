"""Small Lightning callbacks that lightsweep adds to every run."""

from __future__ import annotations

import math

import pytorch_lightning as pl

EPOCH_KEYS = ("train/loss_epoch", "train/acc", "val/loss", "val/acc")


class EpochHistory(pl.Callback):
    """Epoch-level metrics as [(epoch, value)] lists, for plots drawn at the end of the run."""

    def __init__(self):
        self.history: dict[str, list[tuple[int, float]]] = {key: [] for key in EPOCH_KEYS}

    def _record(self, trainer: pl.Trainer, prefix: str) -> None:
        if trainer.sanity_checking:
            return
        for key in EPOCH_KEYS:
            if key.startswith(prefix) and key in trainer.callback_metrics:
                self.history[key].append((trainer.current_epoch, float(trainer.callback_metrics[key])))

    def on_validation_epoch_end(self, trainer, pl_module):
        self._record(trainer, "val/")

    def on_train_epoch_end(self, trainer, pl_module):
        self._record(trainer, "train/")

    @property
    def diverged_at(self) -> int | None:
        """The first epoch (0-based) whose train or val loss was NaN/inf, else None."""
        bad = [e for key in ("train/loss_epoch", "val/loss") for e, v in self.history[key] if not math.isfinite(v)]
        return min(bad) if bad else None
