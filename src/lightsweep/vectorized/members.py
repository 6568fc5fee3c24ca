"""The members of a vectorized group: each the job it stands for, with what its separate run has.

A `Member` holds its job's resolved config and MLflow run, and what `lightsweep.build` makes for any
run: its `Classifier` (its initial weights), its Lightning callbacks and its logger. In the group its
module's parameters become views into the stacked weights (`bind`), so the optimizer and LR scheduler
that its `configure_optimizers` returns are its separate job's, over its own parameters, and its
callbacks see its own weights. `MemberTrainer` is the trainer those callbacks see: Lightning's
ModelCheckpoint and EarlyStopping and lightsweep's callbacks run their own code for each member.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from pytorch_lightning.callbacks import Checkpoint, EarlyStopping, ModelSummary, ProgressBar
from pytorch_lightning.utilities.types import LRSchedulerConfig
from torch.optim.lr_scheduler import ReduceLROnPlateau

from lightsweep.callbacks import (
    EpochHistory,
    InterruptCheckpoint,
    OptimizerModes,
    OptunaPruning,
    ProcessGroupExit,
    RandomState,
    RequeueAtEpochStart,
    RunArtifacts,
    SignalCheck,
)

# About the process and the console, not a run: the group's trainer runs them once.
ONCE_PER_GROUP = (ProgressBar, ModelSummary, SignalCheck, ProcessGroupExit, RequeueAtEpochStart)
# Each member runs its own, with its trainer view; with the above, what a job's callbacks may be in a group.
PER_MEMBER = (
    Checkpoint,
    EarlyStopping,
    InterruptCheckpoint,
    EpochHistory,
    RandomState,
    RunArtifacts,
    OptunaPruning,
    OptimizerModes,
)
PER_MEMBER_CALLBACKS = ONCE_PER_GROUP + PER_MEMBER
# The callbacks that watch a metric run after the others at an epoch's end (Lightning's order too).
MONITORING = (Checkpoint, EarlyStopping)


class MemberTrainer:
    """A member's trainer as its own callbacks see it: the member's metrics, logger, callbacks, module,
    stop flag and checkpoints; where training stands (epoch, step, stage, strategy, device, settings)
    is the group's trainer, until the member has stopped: then its own last epoch and step stay.

    Setting `should_stop` stops this member only; `save_checkpoint` writes the member's own checkpoint,
    a single run's (`StackedClassifier.save_member_checkpoint`)."""

    def __init__(self, group_trainer, member: Member):
        self.group_trainer = group_trainer
        self.member = member

    def __getattr__(self, name: str):
        return getattr(self.group_trainer, name)

    @property
    def callback_metrics(self) -> dict:
        return self.member.metrics

    logged_metrics = progress_bar_metrics = callback_metrics

    @property
    def loggers(self) -> list:
        return [self.member.logger] if self.member.logger else []

    @property
    def logger(self):
        return self.member.logger or None

    @property
    def callbacks(self) -> list:
        return self.member.callbacks

    @property
    def checkpoint_callbacks(self) -> list:
        return [c for c in self.member.callbacks if isinstance(c, Checkpoint)]

    @property
    def checkpoint_callback(self):
        return next(iter(self.checkpoint_callbacks), None)

    @property
    def early_stopping_callbacks(self) -> list:
        return [c for c in self.member.callbacks if isinstance(c, EarlyStopping)]

    @property
    def early_stopping_callback(self):
        return next(iter(self.early_stopping_callbacks), None)

    @property
    def lightning_module(self):
        return self.member.module

    model = lightning_module

    @property
    def datamodule(self):
        return self.member.datamodule

    @property
    def optimizers(self) -> list:
        return [self.member.optimizer]

    @property
    def lr_scheduler_configs(self) -> list:
        return [self.member.scheduler] if self.member.scheduler is not None else []

    @property
    def should_stop(self) -> bool:
        return self.member.should_stop

    @should_stop.setter
    def should_stop(self, value: bool) -> None:
        self.member.should_stop = bool(value)

    @property
    def current_epoch(self) -> int:
        return self.member.ended[0] if self.member.ended else self.group_trainer.current_epoch

    @property
    def global_step(self) -> int:
        return self.member.ended[1] if self.member.ended else self.group_trainer.global_step

    def save_checkpoint(self, filepath, weights_only: bool | None = None, storage_options=None) -> None:
        self.group_trainer.lightning_module.save_member_checkpoint(self.member, filepath, weights_only, storage_options)


@dataclass(eq=False)
class Member:
    """One job of a group: its resolved config, its run (None: not tracked), its number, and what
    `lightsweep.build` made for it (module, data module, callbacks, logger). The group fills in the rest."""

    cfg: object
    run: object
    num: int
    module: object = None
    datamodule: object = None
    callbacks: list = field(default_factory=list)
    logger: object = None
    # --- in the group ---
    trainer: MemberTrainer | None = None
    optimizer: torch.optim.Optimizer | None = None
    scheduler: LRSchedulerConfig | None = None
    metrics: dict = field(default_factory=dict)  # its callback_metrics
    should_stop: bool = False  # set by its callbacks (EarlyStopping), acted on at its epoch's end
    diverged: bool = False  # a non-finite training loss: it takes no more steps, and stops at the epoch's end
    ended: tuple[int, int] | None = None  # (epochs, steps) it trained, once it has stopped
    fit_metrics: dict = field(default_factory=dict)  # its callback_metrics when fit ended (before the test)
    tested: bool = False  # its best weights go through the group's test (not when it diverged, or test=false)

    @property
    def label(self) -> str:
        return f"job {self.num} ({self.run.run_id if self.run is not None else 'not tracked'})"

    @property
    def running(self) -> bool:
        """Still in the group's fit: its callbacks hear the epoch's hooks."""
        return self.ended is None

    @property
    def stepping(self) -> bool:
        """Its optimizer steps this batch."""
        return self.ended is None and not self.diverged

    # --- callbacks ---------------------------------------------------------------------------------
    def own_callbacks(self, monitoring: bool | None = None) -> list:
        """Its callbacks that run per member, in Lightning's order (checkpoints last); `monitoring`
        True/False: only those that watch a metric (checkpoints, early stopping) / only the others."""
        own = [c for c in self.callbacks if not isinstance(c, ONCE_PER_GROUP)]
        own = [c for c in own if not isinstance(c, Checkpoint)] + [c for c in own if isinstance(c, Checkpoint)]
        if monitoring is None:
            return own
        return [c for c in own if isinstance(c, MONITORING) == monitoring]

    def call(self, hook: str, *args, monitoring: bool | None = None) -> None:
        """Run `hook` of its own callbacks with its trainer and module, as Lightning runs a run's."""
        for callback in self.own_callbacks(monitoring):
            getattr(callback, hook)(self.trainer, self.module, *args)

    def callback_states(self) -> dict:
        """Its callbacks' states keyed as Lightning keys them in a checkpoint."""
        states = {}
        for callback in self.callbacks:
            if state := callback.state_dict():
                states[callback.state_key] = state
        return states

    def load_callback_states(self, states: dict) -> None:
        for callback in self.callbacks:
            if callback.state_key in states:
                callback.load_state_dict(states[callback.state_key])

    # --- in the group: weights, optimizer, logging -----------------------------------------------
    def bind(self, weights: dict[str, torch.Tensor], index: int) -> None:
        """Its module's parameters become row `index` of the stacked `weights` (views: a step of its
        optimizer updates the stack), in the stack's device and precision."""
        any_weight = next(iter(weights.values()))
        self.module.to(device=any_weight.device, dtype=any_weight.dtype)
        for name, parameter in self.module.named_parameters():
            parameter.data = weights[name].data[index]

    def attach(self, group_trainer) -> None:
        self.trainer = MemberTrainer(group_trainer, self)
        self.module.trainer = self.trainer

    def configure(self) -> None:
        """Its optimizer and scheduler: its own module's `configure_optimizers`, as its separate run's."""
        configured = self.module.configure_optimizers()
        if isinstance(configured, dict):
            self.optimizer = configured["optimizer"]
            if scheduler := configured.get("lr_scheduler"):
                scheduler = scheduler if isinstance(scheduler, dict) else {"scheduler": scheduler}
                plateau = isinstance(scheduler["scheduler"], ReduceLROnPlateau)
                self.scheduler = LRSchedulerConfig(**scheduler, reduce_on_plateau=plateau)
        else:
            self.optimizer = configured

    def bind_grads(self, weights: list[torch.Tensor], index: int) -> None:
        """Its parameters' gradients: its rows of the stacked gradients (views, no copy)."""
        for parameter, stacked in zip(self.module.parameters(), weights):
            parameter.grad = None if stacked.grad is None else stacked.grad[index]

    def log(self, values: dict[str, float], step: int) -> None:
        """Log metrics as Lightning logs a run's: with the epoch, at `step`."""
        if self.logger:
            self.logger.log_metrics({**values, "epoch": self.trainer.current_epoch}, step=step)

    def checkpoint_entries(self) -> dict:
        """What its own checkpoint holds where the group's differs: its weights (copies: a view would
        save the whole stack), its optimizer's and scheduler's state, its callbacks' and hyperparameters."""
        from pytorch_lightning import LightningModule

        return {
            "state_dict": {k: v.detach().clone() for k, v in self.module.state_dict().items()},
            "optimizer_states": [self.optimizer.state_dict()],
            "lr_schedulers": [self.scheduler.scheduler.state_dict()] if self.scheduler is not None else [],
            "callbacks": self.callback_states(),
            LightningModule.CHECKPOINT_HYPER_PARAMS_KEY: dict(self.module.hparams),
            # what Lightning records for hyperparameters saved from __init__'s arguments
            LightningModule.CHECKPOINT_HYPER_PARAMS_NAME: "kwargs",
        }

    def group_state(self) -> dict:
        """What the group's own checkpoint keeps of it, beyond its weights and optimizer."""
        return {
            "label": self.label,
            "callbacks": self.callback_states(),
            "should_stop": self.should_stop,
            "diverged": self.diverged,
            "ended": self.ended,
        }

    def load_group_state(self, state: dict) -> None:
        self.load_callback_states(state["callbacks"])
        self.should_stop, self.diverged = state["should_stop"], state["diverged"]
        self.ended = tuple(state["ended"]) if state["ended"] is not None else None
