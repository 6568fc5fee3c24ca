"""Schedule-Free optimizers' two sets of weights: train mode for the steps, eval mode for everything else."""

from __future__ import annotations

import pytorch_lightning as pl


def has_modes(optimizer_class) -> bool:
    """Whether an optimizer class switches its parameters between a train and an eval mode (Schedule-Free:
    `.train()`/`.eval()` move the weights in place); torch's optimizers have no such methods."""
    return callable(getattr(optimizer_class, "train", None)) and callable(getattr(optimizer_class, "eval", None))


class OptimizerModes(pl.Callback):
    """Puts the run's optimizers that have modes (`has_modes`) into eval mode around validation, test and
    checkpoints, and back into train mode for the steps.

    A Schedule-Free optimizer steps one sequence of weights (train mode) and evaluates another, their
    average (eval mode); its `.eval()`/`.train()` swap them in the model's parameters. So the weights
    that are validated, tested, written to checkpoints and logged as the model are the eval-mode ones:
    eval mode from each validation (and each epoch's end, where checkpoints are written) until the next
    training batch, and from the end of training on (test and the logged model read those weights).
    A checkpoint holds the optimizer in the mode its weights are in, so a run resumed from it switches
    back to train mode at its first batch. Each `.train()`/`.eval()` is the optimizer's own; calling
    it in the mode it is in does nothing.

    Only `trainer.optimizers` is used, so that a vectorized group runs one per member with the member's
    trainer view (its optimizer); a group validates only at epochs' ends, so it needs no batch hook.
    """

    def __init__(self):
        self.training = False  # not known to be in train mode: the first batch switches

    def switch(self, trainer, train: bool) -> None:
        for optimizer in trainer.optimizers:
            if has_modes(type(optimizer)):
                optimizer.train() if train else optimizer.eval()
        self.training = train

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.switch(trainer, True)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self.training:  # after a validation within the epoch, or a resumed run's first batch
            self.switch(trainer, True)

    def on_validation_start(self, trainer, pl_module) -> None:
        self.switch(trainer, False)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # (before the checkpoints: Lightning runs the callbacks that monitor a metric last)
        self.switch(trainer, False)

    def on_train_end(self, trainer, pl_module) -> None:
        self.switch(trainer, False)

    def on_test_start(self, trainer, pl_module) -> None:
        self.switch(trainer, False)

    def on_predict_start(self, trainer, pl_module) -> None:
        self.switch(trainer, False)
