"""The one LightningModule: loss, metrics, optimizer/scheduler wiring and logging.

Model files only build a network and choose a loss; everything else lives here.
"""

from __future__ import annotations

from typing import Callable

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics.classification import Accuracy, ConfusionMatrix


class Classifier(pl.LightningModule):
    """Wraps a network that maps (N, input_dim) features to logits.

    `optimizer` and `scheduler` are partials from Hydra (`_partial_: true`): the optimizer is
    completed with the parameters, the scheduler with the optimizer.
    """

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
    ):
        super().__init__()
        self.net = net
        self.num_classes = num_classes
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        task = {"task": "binary"} if num_classes == 2 and self.binary else {"task": "multiclass", "num_classes": num_classes}
        self.train_acc = Accuracy(**task)
        self.val_acc = Accuracy(**task)
        self.test_acc = Accuracy(**task)
        self.test_confusion = ConfusionMatrix(**task)

    binary = False  # one logit + BCE instead of K logits + CE

    # --- subclasses choose these ----------------------------------------------------------------
    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict_labels(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(dim=1)

    # --- shared ---------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @staticmethod
    def class_index(target: torch.Tensor) -> torch.Tensor:
        """Integer labels from sparse labels (N,) or one-hot / probability targets (N, K)."""
        return target.argmax(dim=1) if target.ndim == 2 else target

    def _step(self, batch, stage: str, accuracy: Accuracy):
        x, target = batch
        logits = self(x)
        loss = self.loss(logits, target)
        labels = self.class_index(target)
        preds = self.predict_labels(logits)
        accuracy(preds, labels)
        sync = self.trainer.world_size > 1
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=not on_step, prog_bar=True, sync_dist=sync)
        if on_step:  # the epoch mean too, for learning curves against epoch
            self.log("train/loss_epoch", loss, on_step=False, on_epoch=True, sync_dist=sync)
        self.log(f"{stage}/acc", accuracy, on_step=False, on_epoch=True, prog_bar=stage != "train")
        return loss, preds, labels

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train", self.train_acc)[0]

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val", self.val_acc)

    def test_step(self, batch, batch_idx):
        _, preds, labels = self._step(batch, "test", self.test_acc)
        self.test_confusion.update(preds, labels)

    def on_test_epoch_start(self) -> None:
        self.test_confusion.reset()

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise ValueError("no optimizer: pass a partial, e.g. optimizer=adam")
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
