"""Where a SLURM task warned of its time limit (or of a preemption) hands itself over to be requeued."""

from __future__ import annotations

import pytorch_lightning as pl

from lightsweep import requeue


class RequeueAtEpochStart(pl.Callback):
    """As an epoch starts: the previous epoch's checkpoint is written and nothing of this one is logged,
    so a task that SLURM's warning signal reached is requeued here (lightsweep.requeue; it exits)."""

    def on_train_epoch_start(self, trainer, pl_module):
        requeue.at_epoch_start()
