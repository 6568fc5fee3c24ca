"""The one LightningModule: loss, metrics, optimizer/scheduler wiring and logging.

Model files only build a network and choose a loss; everything else lives here. Training follows
Lightning's contract: one batch and one optimizer step per `training_step`, automatic optimization.
"""

from __future__ import annotations

from typing import Callable

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.classification import Accuracy, ConfusionMatrix

from lightsweep.models.param_groups import parameter_groups


class WeightedMean(Metric):
    """The sample-weighted mean of per-batch losses, accumulated exactly as `self.log(loss,
    on_epoch=True)` does (value * batch size, added one batch after another). NaN/inf pass through:
    the divergence check must see them (torchmetrics' MeanMetric drops the weights once its NaN
    handling is disabled)."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, value: torch.Tensor, weight: int) -> None:
        self.total = self.total + value * weight
        self.count = self.count + weight

    def compute(self) -> torch.Tensor:
        return self.total / self.count


class Classifier(pl.LightningModule):
    """Wraps a network that maps (N, input_dim) features to logits.

    `optimizer` and `scheduler` are partials from Hydra (`_partial_: true`): the optimizer is
    completed with the parameters, the scheduler with the optimizer. `scheduler_config` holds
    Lightning's own keys for the scheduler (`interval`: epoch or step, `frequency`, `monitor` for
    ReduceLROnPlateau), as Lightning's `lr_scheduler` dict takes them. `param_groups` (the optimizer
    config's rule, lightsweep.models.param_groups) puts the parameters into groups with options of
    their own (Muon: weight matrices apart from biases).
    """

    binary = False  # one logit + BCE instead of K logits + CE
    # Sweep members can train as one batched model (lightsweep.vectorized): the loss and predictions are
    # functions of the network's logits, per batch, and the network's parameters are all it trains.
    vectorizable = True
    # The arguments that are the run's wiring, not its model: never saved as hyperparameters.
    WIRING = ("optimizer", "scheduler", "scheduler_config", "param_groups")

    def __init__(
        self,
        net: nn.Module,
        num_classes: int,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        scheduler_config: dict | None = None,
        param_groups: list | None = None,
    ):
        super().__init__()
        self.net = net
        self.num_classes = num_classes
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_config = dict(scheduler_config or {})
        self.param_group_rules = param_groups
        task = (
            {"task": "binary"}
            if num_classes == 2 and self.binary
            else {"task": "multiclass", "num_classes": num_classes}
        )
        for stage in ("train", "val", "test"):
            setattr(self, f"{stage}_acc", Accuracy(**task))
            setattr(self, f"{stage}_loss", WeightedMean())
        self.test_confusion = ConfusionMatrix(**task)
        self._epoch_metrics_pending: set[str] = set()  # stages whose epoch metrics are not logged yet

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

    def _step(self, batch, stage: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Loss, predictions and labels of one batch; the stage's epoch metrics are updated."""
        x, target = batch
        if x.is_floating_point() and x.dtype != self.dtype:  # trainer.precision=64-true: a double model
            x = x.to(self.dtype)
        logits = self(x)
        loss = self.loss(logits, target)
        preds, labels = self.predict_labels(logits.detach()), self.class_index(target)
        getattr(self, f"{stage}_acc").update(preds, labels)
        getattr(self, f"{stage}_loss").update(loss.detach(), len(target))
        # Epoch metrics are torchmetrics objects: logged once per epoch, Lightning computes them from
        # all of the epoch's updates at its end (synced over DDP ranks) and resets them. Logging them
        # at every batch would only add Lightning's per-call cost.
        if stage in self._epoch_metrics_pending:
            self._epoch_metrics_pending.discard(stage)
            name = "train/loss_epoch" if stage == "train" else f"{stage}/loss"
            for key, metric in (
                (name, getattr(self, f"{stage}_loss")),
                (f"{stage}/acc", getattr(self, f"{stage}_acc")),
            ):
                self.log(key, metric, on_step=False, on_epoch=True, prog_bar=stage != "train", batch_size=len(target))
        return loss, preds, labels

    def on_train_epoch_start(self) -> None:
        self._epoch_metrics_pending.add("train")

    def on_validation_epoch_start(self) -> None:
        self._epoch_metrics_pending.add("val")

    def on_test_epoch_start(self) -> None:
        self._epoch_metrics_pending.add("test")
        self.test_confusion.reset()

    def training_step(self, batch, batch_idx):
        loss, _, _ = self._step(batch, "train")
        self.log(
            "train/loss",
            loss,
            on_step=True,
            on_epoch=False,
            prog_bar=True,
            batch_size=len(batch[1]),
            sync_dist=self.trainer.world_size > 1,
        )
        return loss

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        _, preds, labels = self._step(batch, "test")
        self.test_confusion.update(preds, labels)

    def configure_optimizers(self):
        """The optimizer over this module's parameters and, with a scheduler, Lightning's `lr_scheduler`
        dict for it. A vectorized sweep's member calls this too: its optimizer is its job's."""
        if self.optimizer_factory is None:
            raise ValueError("no optimizer: pass a partial, e.g. optimizer=adam")
        params = parameter_groups(self, self.param_group_rules) if self.param_group_rules else self.parameters()
        optimizer = self.optimizer_factory(params=params)
        if self.scheduler_factory is None:
            return optimizer
        keywords = getattr(self.scheduler_factory, "keywords", {})
        # `total_steps: null` in a scheduler's config (OneCycleLR): the run's length in optimizer steps.
        length = (
            {"total_steps": self.total_steps()} if "total_steps" in keywords and keywords["total_steps"] is None else {}
        )
        scheduler = self.scheduler_factory(optimizer=optimizer, **length)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", **self.scheduler_config},
        }

    def total_steps(self) -> int:
        """The optimizer steps of the whole run (Lightning's estimate); 1 before a trainer is attached
        (when the config is checked, only the values are)."""
        try:
            trainer = self.trainer
        except RuntimeError:
            return 1
        return int(trainer.estimated_stepping_batches)
