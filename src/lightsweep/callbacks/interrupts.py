"""Lightning callbacks for stopping: a checkpoint of the moment, and signals a library swallowed."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl

from lightsweep import interrupts


class InterruptCheckpoint(pl.Callback):
    """Saves `<dirpath>/interrupted.ckpt` when fit stops on Ctrl-C, SIGTERM or an error.

    Lightning's OnExceptionCheckpoint does the same but also makes every `fit()` resume from the
    newest checkpoint it finds in the folder; lightsweep resumes only when asked (`resume=`).
    """

    def __init__(self, dirpath: str, filename: str = "interrupted"):
        self.path = str(Path(dirpath) / f"{filename}.ckpt")

    def on_exception(self, trainer, pl_module, exception):
        trainer.save_checkpoint(self.path)


class SignalCheck(pl.Callback):
    """At every batch end: raise a Ctrl-C/SIGTERM that arrived but was swallowed on its way
    (lightsweep.interrupts), so the run stops within a batch instead of training on."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        interrupts.check()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        interrupts.check()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        interrupts.check()
