"""Lightning callbacks that keep a run's epoch history and random state (both go into checkpoints)."""

from __future__ import annotations

import math

import pytorch_lightning as pl

EPOCH_KEYS = ("train/loss_epoch", "train/acc", "val/loss", "val/acc")


class EpochHistory(pl.Callback):
    """Epoch-level metrics as [(epoch, value)] lists, and the test confusion matrix, for the plots.

    Its state is a callback state_dict, saved in checkpoints: a resumed run's plots show every epoch.
    It also closes a gap: Lightning hands an epoch's training metrics to the logger only after the
    epoch's checkpoint is written, so a crash in between would lose them; a resumed run logs the
    checkpoint's last epoch again.
    """

    def __init__(self):
        self.history: dict[str, list[tuple[int, float]]] = {key: [] for key in EPOCH_KEYS}
        self.logged_at_step: dict[int, int] = {}  # epoch -> the step Lightning logs its metrics at
        self.restored = False
        self.test_confusion = None  # a (K, K) tensor after trainer.test, gathered over DDP ranks

    def _record(self, trainer: pl.Trainer, prefix: str) -> None:
        if trainer.sanity_checking:
            return
        for key in EPOCH_KEYS:
            if key.startswith(prefix) and key in trainer.callback_metrics:
                self.history[key].append((trainer.current_epoch, float(trainer.callback_metrics[key])))
        self.logged_at_step[trainer.current_epoch] = trainer.global_step - 1

    def on_validation_epoch_end(self, trainer, pl_module):
        self._record(trainer, "val/")

    def on_train_epoch_end(self, trainer, pl_module):
        self._record(trainer, "train/")

    def on_test_epoch_end(self, trainer, pl_module):
        # Every rank joins the metric's all-gather under DDP; the result is the same on each.
        if (confusion := getattr(pl_module, "test_confusion", None)) is not None:
            self.test_confusion = confusion.compute().cpu()

    def state_dict(self) -> dict:
        return {
            "history": {key: list(points) for key, points in self.history.items()},
            "steps": dict(self.logged_at_step),
            "test_confusion": self.test_confusion,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        for key, points in state_dict.get("history", {}).items():
            self.history[key] = [(int(e), float(v)) for e, v in points]
        self.logged_at_step = {int(e): int(step) for e, step in state_dict.get("steps", {}).items()}
        self.test_confusion = state_dict.get("test_confusion")
        self.restored = True

    def on_fit_start(self, trainer, pl_module):
        # on_fit_start, not on_train_start: a run resumed from its final epoch trains no more.
        if not (self.restored and trainer.logger and self.logged_at_step):
            return
        epoch = max(self.logged_at_step)
        metrics = {key: value for key, points in self.history.items() for e, value in points if e == epoch}
        trainer.logger.log_metrics({**metrics, "epoch": epoch}, step=self.logged_at_step[epoch])

    @property
    def diverged_at(self) -> int | None:
        """The first epoch (0-based) whose train or val loss was NaN/inf, else None."""
        bad = [e for key in ("train/loss_epoch", "val/loss") for e, v in self.history[key] if not math.isfinite(v)]
        return min(bad) if bad else None


class RandomState(pl.Callback):
    """Puts torch's random state into checkpoints and back, so a resumed run draws the same dropout
    masks as an uninterrupted one (the batch order is already seeded by epoch)."""

    def state_dict(self) -> dict:
        import torch

        state = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        import torch

        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
