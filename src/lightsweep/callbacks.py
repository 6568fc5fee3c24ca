"""Small Lightning callbacks that lightsweep adds to every run."""

from __future__ import annotations

import math

import pytorch_lightning as pl

EPOCH_KEYS = ("train/loss_epoch", "train/acc", "val/loss", "val/acc")


class EpochHistory(pl.Callback):
    """Epoch-level metrics as [(epoch, value)] lists, and the test confusion matrix, for the plots.

    Its state is a callback state_dict, so it also reaches the main process from spawned DDP
    workers (lightsweep.distributed) and is saved in checkpoints.
    """

    def __init__(self):
        self.history: dict[str, list[tuple[int, float]]] = {key: [] for key in EPOCH_KEYS}
        self.test_confusion = None  # a (K, K) tensor after trainer.test, gathered over DDP ranks

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

    def on_test_epoch_end(self, trainer, pl_module):
        # Every rank joins the metric's all-gather under DDP; the result is the same on each.
        if (confusion := getattr(pl_module, "test_confusion", None)) is not None:
            self.test_confusion = confusion.compute().cpu()

    def state_dict(self):
        return {"history": self.history, "test_confusion": self.test_confusion}

    def load_state_dict(self, state_dict):
        self.history = {key: [tuple(p) for p in points] for key, points in state_dict["history"].items()}
        self.test_confusion = state_dict.get("test_confusion")

    @property
    def diverged_at(self) -> int | None:
        """The first epoch (0-based) whose train or val loss was NaN/inf, else None."""
        bad = [e for key in ("train/loss_epoch", "val/loss") for e, v in self.history[key] if not math.isfinite(v)]
        return min(bad) if bad else None
