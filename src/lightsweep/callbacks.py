"""Small Lightning callbacks that lightsweep adds to every run."""

from __future__ import annotations

import math

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar

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


class ProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, refreshed whenever the batch count passes a multiple of `refresh_rate`.

    A training call covers several batches (see `Classifier.training_step`), so the count moves in
    jumps and rarely lands exactly on a multiple, which is all the stock bar checks for.
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        bar, n = self.train_progress_bar, batch_idx + 1
        if bar is None or not self.is_enabled or bar.disable:
            return
        if n // self.refresh_rate > bar.n // self.refresh_rate or n == bar.total:
            bar.n = n
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # refreshes the bar
