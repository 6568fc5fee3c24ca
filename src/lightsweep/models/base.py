"""The one LightningModule: loss, metrics, optimizer/scheduler wiring and logging.

Model files only build a network and choose a loss; everything else lives here.

Training runs several optimizer steps per Lightning call (see `Classifier.training_step`): for
models this small, Lightning's per-batch machinery costs more than the arithmetic.
"""

from __future__ import annotations

import warnings
from typing import Callable

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.classification import Accuracy, ConfusionMatrix

# `training_step(dataloader_iter)` is a supported Lightning signature; its notes that it is
# "experimental" would only repeat on every run. (Hooks still get the right batch_idx: Lightning
# passes the index of the last batch the step consumed.)
warnings.filterwarnings("ignore", message="Found `dataloader_iter` argument in the `training_step`")
warnings.filterwarnings("ignore", message="You are using the `dataloader_iter` step flavor")


class WeightedMean(Metric):
    """The sample-weighted mean of per-batch losses, accumulated exactly as `self.log(loss,
    on_epoch=True)` does (value * batch size, added one batch after another), so the result is the
    same to the last bit. NaN/inf pass through: the divergence check must see them.
    (torchmetrics' MeanMetric ignores the weights once its NaN handling is disabled.)"""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, values: list[torch.Tensor], weights: list[int]) -> None:
        total = self.total
        for value, weight in zip(values, weights):
            total = total + value * weight
        self.total = total
        self.count = self.count + sum(weights)

    def compute(self) -> torch.Tensor:
        return self.total / self.count


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
        self.train_loss = WeightedMean()
        self.val_loss = WeightedMean()
        self.test_loss = WeightedMean()

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

    # --- metrics ----------------------------------------------------------------------------------
    # Epoch metrics are torchmetrics objects: updated with every batch, logged once per epoch (a
    # logged Metric is computed from all its updates at the epoch's end, synced across DDP ranks,
    # then reset by Lightning). Each `self.log` costs Lightning ~0.1-0.5 ms, so not once per batch.
    def _log_epoch_metrics(self, stage: str, batch_size: int) -> None:
        prog_bar = stage != "train"
        name = "train/loss_epoch" if stage == "train" else f"{stage}/loss"
        # (batch_size only answers Lightning's question; a Metric's weights are its own.)
        for key, metric in ((name, getattr(self, f"{stage}_loss")), (f"{stage}/acc", getattr(self, f"{stage}_acc"))):
            self.log(key, metric, on_step=False, on_epoch=True, prog_bar=prog_bar, batch_size=batch_size)

    def _eval_step(self, batch, batch_idx: int, stage: str):
        x, target = batch
        logits = self(x)
        loss = self.loss(logits, target)
        labels = self.class_index(target)
        preds = self.predict_labels(logits)
        getattr(self, f"{stage}_acc").update(preds, labels)
        getattr(self, f"{stage}_loss").update([loss], [len(target)])
        if batch_idx == 0:
            self._log_epoch_metrics(stage, len(target))
        return preds, labels

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):
        preds, labels = self._eval_step(batch, batch_idx, "test")
        self.test_confusion.update(preds, labels)

    def on_test_epoch_start(self) -> None:
        self.test_confusion.reset()

    # --- training: several optimizer steps per Lightning call -------------------------------------
    #
    # Lightning spends ~1 ms of Python per training batch (hooks, closure, progress tracking, result
    # collection): more than a softmax regression's whole step. So the training step takes the batch
    # iterator and runs the optimizer steps up to the next point where Lightning must act: the next
    # `log_every_n_steps` step, a validation check, the end of the epoch, `max_steps`, or a SIGTERM.
    # The batches, their order, the optimizer steps and the logged metrics (names, values, steps)
    # are those of one batch per call (tests/test_speed.py compares them bit for bit). Lightning's
    # batch and step counters are advanced to match, so checkpoints, resuming, early stopping and
    # loggers see one batch per optimizer step as before.
    #
    # What only Lightning's automatic optimization does (gradient clipping, accumulation) and
    # validation inside an epoch (val_check_interval) keep one batch per call, as does
    # `fused_steps = False`.
    fused_steps = True
    # Per-step hooks that the direct path skips; if anything overrides them, Lightning calls them.
    _STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")

    @property
    def _fused(self) -> bool:
        trainer = self._trainer
        if not self.fused_steps or trainer is None:
            return False
        return (
            not trainer.gradient_clip_val
            and trainer.accumulate_grad_batches == 1
            and trainer.check_val_every_n_epoch is not None
            and isinstance(trainer.val_check_interval, float)
            and trainer.val_check_interval == 1.0
        )

    @property
    def automatic_optimization(self) -> bool:
        return not self._fused

    @property
    def training_step(self):
        """Lightning reads the signature: fused, it hands over the batch iterator; else one batch."""
        return self._training_steps if self._fused else self._training_batch

    def _training_batch(self, batch, batch_idx):
        x, target = batch
        logits = self(x)
        loss = self.loss(logits, target)
        self._log_train([loss.detach()], [len(target)], [self.predict_labels(logits.detach())], [self.class_index(target)])
        return loss

    def on_train_epoch_start(self) -> None:
        self._epoch_metrics_logged = False

    def _train_batch(self, batch):
        """What Lightning does to a batch before `training_step` (it leaves that to us here)."""
        trainer = self.trainer
        batch = trainer.precision_plugin.convert_input(batch)
        if batch[0].device != self.device:
            batch = trainer.strategy.batch_to_device(batch)
        return batch

    def _training_steps(self, dataloader_iter):
        trainer = self.trainer
        loop = trainer.fit_loop.epoch_loop
        lightning_optimizer = self.optimizers()
        optimizer = lightning_optimizer.optimizer
        direct = self._direct_steps()
        budget = self._steps_until_lightning_acts(loop)
        losses, sizes, preds, labels = [], [], [], []
        while len(losses) < budget:
            try:
                batch, _, _ = next(dataloader_iter)
            except StopIteration:
                break
            x, target = self._train_batch(batch)
            logits = self(x)
            loss = self.loss(logits, target)
            optimizer.zero_grad()
            if direct:  # what Lightning's calls below come down to here, without their hook dispatch
                loss.backward()
                optimizer.step()
            else:
                self.manual_backward(loss)
                lightning_optimizer.step()
            losses.append(loss.detach())
            sizes.append(len(target))
            preds.append(self.predict_labels(logits.detach()))
            labels.append(self.class_index(target))
            if dataloader_iter.done or trainer.received_sigterm:
                break
        if not losses:
            return None
        self._advance_lightning_counters(loop, len(losses), direct)
        if dataloader_iter.done or loop.batch_progress.current.ready == trainer.num_training_batches:
            self._step_epoch_schedulers(loop)
        self._log_train(losses, sizes, preds, labels)
        return None

    def _direct_steps(self) -> bool:
        """Whether backward/step can bypass Lightning's wrappers: one device, 32-bit or bf16-mixed
        precision, no profiler, and nothing overriding the per-step hooks."""
        trainer = self.trainer
        cached = getattr(self, "_direct_steps_cache", None)
        if cached is not None and cached[0] is trainer:
            return cached[1]
        from pytorch_lightning.plugins.precision import MixedPrecision, Precision
        from pytorch_lightning.profilers import PassThroughProfiler
        from pytorch_lightning.strategies import SingleDeviceStrategy
        from pytorch_lightning.utilities.model_helpers import is_overridden

        precision = trainer.precision_plugin
        plain_precision = type(precision) is Precision or (type(precision) is MixedPrecision and precision.scaler is None)
        hooked = any(is_overridden(h, cb, pl.Callback) for cb in trainer.callbacks for h in self._STEP_HOOKS)
        hooked = hooked or any(is_overridden(h, self, pl.LightningModule) for h in self._STEP_HOOKS)
        direct = (
            type(trainer.strategy) is SingleDeviceStrategy
            and plain_precision
            and isinstance(trainer.profiler, PassThroughProfiler)
            and not hooked
        )
        self._direct_steps_cache = (trainer, direct)
        return direct

    def _steps_until_lightning_acts(self, loop) -> int:
        """Optimizer steps this call may take: up to the next logging step, validation check or max_steps."""
        trainer = self.trainer
        every = max(1, trainer.log_every_n_steps)
        budget = every - loop._batches_that_stepped % every
        val_every = trainer.val_check_batch
        if isinstance(val_every, int) and val_every > 0:
            index = loop.total_batch_idx if trainer.check_val_every_n_epoch is None else loop.batch_idx
            budget = min(budget, val_every - index % val_every)
        if trainer.max_steps is not None and trainer.max_steps >= 0:
            budget = min(budget, max(1, trainer.max_steps - trainer.global_step))
        return budget

    @staticmethod
    def _advance_lightning_counters(loop, steps: int, direct: bool) -> None:
        """Lightning counted this call as one batch (and, on the direct path, as no optimizer step)."""
        extra = steps - 1
        for tracker in (loop.batch_progress.total, loop.batch_progress.current):
            tracker.ready += extra
            tracker.started += extra
            tracker.processed += extra
            tracker.completed += extra
        loop._batches_that_stepped += extra  # the x-axis step of logged metrics
        if direct:
            progress = loop.manual_optimization.optim_step_progress  # `trainer.global_step`
            for tracker in (progress.total, progress.current):
                tracker.ready += steps
                tracker.completed += steps

    def _step_epoch_schedulers(self, loop) -> None:
        """Epoch-interval LR schedulers step after the epoch's last batch, where Lightning steps them."""
        trainer = self.trainer
        for config in trainer.lr_scheduler_configs:
            if config.reduce_on_plateau or config.interval != "epoch":
                raise ValueError("fused training steps support per-epoch LR schedulers only")
            if (trainer.current_epoch + 1) % config.frequency == 0:
                loop.scheduler_progress.increment_ready()
                self.lr_scheduler_step(config.scheduler, None)
                loop.scheduler_progress.increment_completed()

    def _log_train(self, losses, sizes, preds, labels) -> None:
        """Training metrics of these steps: the last step's loss (reaches the logger every
        `log_every_n_steps` steps, always a call's last step) and the epoch's mean loss and accuracy."""
        self.train_loss.update(losses, sizes)
        self.train_acc.update(torch.cat(preds), torch.cat(labels))
        sync = self.trainer.world_size > 1
        self.log("train/loss", losses[-1], on_step=True, on_epoch=False, prog_bar=True, batch_size=sizes[-1], sync_dist=sync)
        if not getattr(self, "_epoch_metrics_logged", False):
            self._log_epoch_metrics("train", sum(sizes))
            self._epoch_metrics_logged = True

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise ValueError("no optimizer: pass a partial, e.g. optimizer=adam")
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
