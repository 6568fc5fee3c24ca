"""M sweep members of one architecture trained as one LightningModule.

Each member is the separate job's `Classifier` (same initial weights, same batches, same update rule):
the network runs once per step for all members through `torch.func.vmap` over stacked parameters
(leading dimension M), the loss of each member is its own model's loss, and `MemberOptimizer` applies
each member's torch.optim rule. Members that share a seed share their batches (`SeedBatches`), so a
seed group's first layer is one wide matmul; members come sorted by seed group, so each group's
weights are one slice of the stack (`split`: one gradient copy back, not a scatter per group).

Lightning allows per-member optimizers only under manual optimization, so the module steps itself;
per-member early stopping, divergence and best weights are kept here, epoch by epoch.
"""

from __future__ import annotations

import functools
import itertools
import math
import time
from dataclasses import dataclass, field

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from lightsweep.data.base import epoch_order
from lightsweep.models.base import Classifier
from lightsweep.vectorized.optim import MemberLRScheduler, MemberOptimizer


@dataclass
class Stopping:
    """Lightning's EarlyStopping rule (monitor, mode, patience, min_delta), per member."""

    monitor: str = "val/acc"
    mode: str = "max"
    patience: int = 100
    min_delta: float = 0.0


@dataclass
class MemberHistory:
    """What one member logged: per-epoch metrics, training-loss points, and why it stopped."""

    epochs: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    steps: list[tuple[int, float]] = field(default_factory=list)
    times: dict[int, int] = field(default_factory=dict)  # epoch (or step) -> when it was recorded, ms
    stopped_at: int | None = None  # epoch after which it stopped changing
    diverged_at: int | None = None
    best_epoch: int | None = None
    best_score: float | None = None


class SeedBatches:
    """Each epoch's batches of every seed group, stacked: (S, B, ...) per step.

    Seed group s draws exactly the batches `TensorBatches(shuffle=True, seed=seeds[s])` gives a
    single job (`epoch_order`); the last batch may be shorter, for all alike.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seeds: list[int]):
        self.x, self.y, self.batch_size, self.seeds = x, y, batch_size, seeds
        self.epoch = 0

    batch_sampler = None  # Lightning inspects it like a DataLoader's

    @property
    def sampler(self):
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __iter__(self):
        n = len(self.x)
        orders = torch.stack([epoch_order(n, seed, self.epoch) for seed in self.seeds]).to(self.x.device)
        for start in range(0, n, self.batch_size):
            idx = orders[:, start : start + self.batch_size]
            yield self.x[idx], self.y[idx]


class StackedClassifier(pl.LightningModule):
    """`members` single-model Classifiers (built as their jobs build them) trained as one model.

    `template` is one of them: its network structure, loss and labels serve all (their parameters are
    stacked here). `optimizers[m]`/`schedules[m]` are member m's specs (lightsweep.vectorized.optim);
    `seed_index[m]` is its seed group in the batches: 0, 1, ... in order (members sorted by seed).
    """

    def __init__(
        self,
        template,
        states,
        optimizers,
        schedules,
        seed_index,
        stopping: Stopping,
        log_every: int,
        best_by: tuple[str, str] = ("val/acc", "max"),  # ModelCheckpoint's monitor and mode
    ):
        super().__init__()
        self.automatic_optimization = False
        self.template = [template]  # a list: not a submodule (its own parameters are not trained)
        self.names = [name for name, _ in template.named_parameters()]
        self.input_layer, self.rest = self.split(template)
        self.weights = torch.nn.ParameterList(
            torch.nn.Parameter(torch.stack([state[name] for state in states])) for name in self.names
        )
        self.optimizer_specs, self.schedule_specs = optimizers, schedules
        seed_index = [int(s) for s in seed_index]
        groups = max(seed_index) + 1
        if seed_index != sorted(seed_index) or set(seed_index) != set(range(groups)):
            raise ValueError(f"members must come sorted by seed group 0, 1, ...; got {seed_index}")
        self.group_sizes = [seed_index.count(s) for s in range(groups)]
        self.equal_groups = len(set(self.group_sizes)) == 1  # a comparison sweep's usual shape
        self.stopping, self.log_every, self.best_by = stopping, log_every, best_by
        m = len(states)
        self.history = [MemberHistory() for _ in range(m)]
        self.best: list[torch.Tensor] = []  # each member's best weights, stacked (set when fit starts)
        self.wait = [0] * m
        self.stop_best: list[float | None] = [None] * m
        self.sums: dict[str, torch.Tensor] = {}

    @property
    def members(self) -> int:
        return len(self.history)

    def configure_optimizers(self):
        optimizer = MemberOptimizer(self.weights, self.optimizer_specs)
        scheduler = MemberLRScheduler(optimizer, self.schedule_specs)
        return [optimizer], [scheduler]

    # --- the members' forward and loss ----------------------------------------------------------------
    @staticmethod
    def split(template):
        """((weight name, bias name) of the Linear that reads the input, the rest of the network and its
        parameters' names), or (None, None) for a network that does not say how it splits or a model
        whose forward is more than its network (logistic regression squeezes its logit)."""
        split = getattr(template.net, "split_input_layer", None)
        if split is None or type(template).forward is not Classifier.forward:
            return None, None
        first, rest = split()
        if first.bias is None:
            return None, None
        name_of = {id(p): name for name, p in template.named_parameters()}
        rest_names = {local: name_of[id(p)] for local, p in rest.named_parameters()}
        return (name_of[id(first.weight)], name_of[id(first.bias)]), (rest, rest_names)

    def run_members(self, x: torch.Tensor, y: torch.Tensor, weights, shared: bool):
        """Each member's loss (M,), correct predictions (M,) and predicted labels (M, B).

        `shared`: `x`, `y` are one batch for all members; else (S, B, ...) stacks of one batch per
        seed group. The input layer of the members that read one batch is one wide matmul (their
        weights side by side); the rest of each member's network, its loss and predictions run in
        one vmapped call.
        """
        params = dict(zip(self.names, weights))
        if self.input_layer is None:
            return self.vmapped(params, x, y, shared)
        w, b = (params[name] for name in self.input_layer)  # (M, out, in), (M, out)
        m, width = w.shape[:2]
        if shared:
            hidden = F.linear(x, w.flatten(0, 1), b.flatten()).view(len(x), m, width).transpose(0, 1)
        elif self.equal_groups:
            groups, size = len(self.group_sizes), self.group_sizes[0]
            # (weights @ x^T): the weights' gradient then comes out in their own layout, not transposed
            wide = w.reshape(groups, size * width, w.shape[2])
            hidden = torch.baddbmm(b.reshape(groups, size * width, 1), wide, x.transpose(1, 2))
            hidden = hidden.view(m, width, x.shape[1]).transpose(1, 2).contiguous()
            y = y.repeat_interleave(size, dim=0)
        else:
            starts = [0, *itertools.accumulate(self.group_sizes)]
            hidden = torch.cat(
                [
                    F.linear(x[s], w[i:j].flatten(0, 1), b[i:j].flatten())
                    .view(x.shape[1], j - i, width)
                    .transpose(0, 1)
                    for s, (i, j) in enumerate(zip(starts, starts[1:]))
                ]
            )
            y = torch.cat([y[s].expand(n, *y.shape[1:]) for s, n in enumerate(self.group_sizes)])
        rest, names = self.rest
        rest_params = {local: params[name] for local, name in names.items()}
        tail = functools.partial(self.outcome, rest)
        return vmap(tail, in_dims=(0, 0, None if shared else 0), randomness="different")(rest_params, hidden, y)

    def outcome(self, network, params, inputs, target):
        """One member's loss, correct predictions and predicted labels: `network` (the model, or the
        rest of its network after the input layer) run on `inputs` with `params`."""
        template = self.template[0]
        logits = functional_call(network, params, (inputs,))
        predicted = template.predict_labels(logits)
        return template.loss(logits, target), (predicted == template.class_index(target)).sum(), predicted

    def vmapped(self, params, x, y, shared: bool):
        """`run_members` for any network: the whole network vmapped over the members (a seed group's
        shared batch is then expanded to every member)."""
        one = functools.partial(self.outcome, self.template[0])
        members = vmap(one, in_dims=(0, None, None), randomness="different")
        if shared:
            return members(params, x, y)
        groups, size = len(self.group_sizes), self.group_sizes[0]
        if self.equal_groups:  # one call, vmapped over the groups too
            stacked = {name: w.view(groups, size, *w.shape[1:]) for name, w in params.items()}
            out = vmap(members, in_dims=(0, 0, 0), randomness="different")(stacked, x, y)
            return tuple(o.flatten(0, 1) for o in out)
        pieces = {name: w.split(self.group_sizes) for name, w in params.items()}
        out = [members({k: v[s] for k, v in pieces.items()}, x[s], y[s]) for s in range(groups)]
        return tuple(torch.cat(parts) for parts in zip(*out))

    def accumulate(self, stage: str, losses: torch.Tensor, correct: torch.Tensor, n: int) -> None:
        for key, value in (("loss", losses.detach().double() * n), ("correct", correct)):
            self.sums[f"{stage}/{key}"] = self.sums.get(f"{stage}/{key}", 0) + value
        self.sums[f"{stage}/n"] = self.sums.get(f"{stage}/n", 0) + n

    def epoch_values(self, stage: str) -> tuple[list[float], list[float]]:
        n = self.sums.pop(f"{stage}/n")
        losses = (self.sums.pop(f"{stage}/loss") / n).tolist()
        accs = (self.sums.pop(f"{stage}/correct").double() / n).tolist()
        return losses, accs

    @property
    def active(self) -> torch.Tensor:
        return self.optimizers().optimizer.active

    def on_fit_start(self):
        # Now: Lightning has moved the weights to their device and precision (e.g. float64).
        self.best = [w.detach().clone() for w in self.weights]

    # --- training ---------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        x, y = batch
        losses, correct, _ = self.run_members(x.to(self.weights[0].dtype), y, list(self.weights), shared=False)
        optimizer = self.optimizers()
        active = optimizer.optimizer.active
        bad = active & ~torch.isfinite(losses.detach())
        if bad.any():  # stop it before the step: its run fails, the others go on
            for m in bad.nonzero().flatten().tolist():
                self.history[m].diverged_at = self.current_epoch
                self.history[m].stopped_at = self.current_epoch
            active = active & ~bad
            optimizer.optimizer.active = active
        optimizer.zero_grad()
        self.manual_backward((losses if bool(active.all()) else torch.where(active, losses, 0.0)).sum())
        optimizer.step()
        self.accumulate("train", losses, correct, y.shape[1])
        step = self.global_step  # optimizer steps so far, as a single run counts them
        if step % self.log_every == 0:
            for m in active.nonzero().flatten().tolist():
                self.history[m].steps.append((step, float(losses[m].detach())))

    def on_train_epoch_end(self):
        losses, accs = self.epoch_values("train")
        self.record("train/loss_epoch", losses)
        self.record("train/acc", accs)
        self.lr_schedulers().step()
        if not bool(self.active.any()):
            self.trainer.should_stop = True

    # --- validation: per-member early stopping and best weights -------------------------------------------
    def validation_step(self, batch, batch_idx):
        x, y = batch
        losses, correct, _ = self.run_members(x.to(self.weights[0].dtype), y, list(self.weights), shared=True)
        self.accumulate("val", losses, correct, len(y))

    def on_validation_epoch_end(self):
        losses, accs = self.epoch_values("val")
        if self.trainer.sanity_checking:
            return
        self.record("val/loss", losses)
        self.record("val/acc", accs)
        self.record("epoch", [float(self.current_epoch)] * self.members)
        values = {"val/acc": accs, "val/loss": losses}
        scores, sign = values[self.stopping.monitor], 1 if self.stopping.mode == "max" else -1
        best_scores, best_sign = values[self.best_by[0]], 1 if self.best_by[1] == "max" else -1
        active = self.active.clone()
        for m in range(self.members):
            if self.history[m].stopped_at is not None and self.history[m].stopped_at < self.current_epoch:
                continue
            score, history = scores[m], self.history[m]
            if not math.isfinite(losses[m]) or not math.isfinite(score):
                history.diverged_at = history.stopped_at = self.current_epoch
                active[m] = False
                continue
            best_score = best_scores[m]
            if history.best_score is None or best_sign * (best_score - history.best_score) > 0:  # ModelCheckpoint
                history.best_score, history.best_epoch = best_score, self.current_epoch
                for best, w in zip(self.best, self.weights):
                    best[m] = w.detach()[m]
            if self.stop_best[m] is None or sign * (score - self.stop_best[m]) > self.stopping.min_delta:
                self.stop_best[m], self.wait[m] = score, 0  # EarlyStopping's improvement
            else:
                self.wait[m] += 1
                if self.wait[m] >= self.stopping.patience:
                    history.stopped_at = self.current_epoch
                    active[m] = False
        self.optimizers().optimizer.active = active
        if not bool(active.any()):
            self.trainer.should_stop = True

    def record(self, key: str, values: list[float]) -> None:
        now = int(time.time() * 1000)
        for m, value in enumerate(values):
            history = self.history[m]
            if history.stopped_at is None or history.stopped_at >= self.current_epoch:
                history.epochs.setdefault(key, []).append((self.current_epoch, value))
                history.times[self.current_epoch] = now

    # --- test: each member's best weights ------------------------------------------------------------------
    def on_test_epoch_start(self):
        num_classes = max(self.template[0].num_classes, 2)
        self.confusion = torch.zeros(self.members, num_classes, num_classes, dtype=torch.long, device=self.device)

    def test_step(self, batch, batch_idx):
        x, y = batch
        losses, correct, predicted = self.run_members(x.to(self.best[0].dtype), y, self.best, shared=True)
        self.accumulate("test", losses, correct, len(y))
        labels = self.template[0].class_index(y)
        k = self.confusion.shape[1]
        flat = labels * k + predicted + torch.arange(self.members, device=self.device)[:, None] * k * k
        self.confusion += torch.bincount(flat.flatten(), minlength=self.members * k * k).view(self.members, k, k)

    def on_test_epoch_end(self):
        self.test_results = self.epoch_values("test")

    def member_state(self, m: int, best: bool = True) -> dict[str, torch.Tensor]:
        """Member m's weights as its single model's `state_dict` entries."""
        weights = self.best if best else self.weights
        return {name: w[m].detach().cpu().clone() for name, w in zip(self.names, weights)}


class GroupData(pl.LightningDataModule):
    """The group's data: the members' DataModule (the same for all), training batches per seed group."""

    def __init__(self, datamodule, seeds: list[int]):
        super().__init__()
        self.datamodule, self.seeds = datamodule, seeds

    def setup(self, stage=None):
        self.datamodule.trainer = self.trainer  # where it keeps its tensors (the trainer's device)
        self.datamodule.setup(stage)

    def train_dataloader(self):
        single = self.datamodule.train_dataloader()  # its tensors, on its device
        return SeedBatches(single.x, single.y, single.batch_size, self.seeds)

    def val_dataloader(self):
        return self.datamodule.val_dataloader()

    def test_dataloader(self):
        return self.datamodule.test_dataloader()
