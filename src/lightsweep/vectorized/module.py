"""M sweep members of one architecture trained as one LightningModule.

Each member is its job's `Classifier` (same initial weights, same batches), whose parameters are views
into the stacked weights (leading dimension M). The network runs once per step for all members through
`torch.func.vmap` over the stacked parameters; each member's loss is its own model's loss. Members that
share a seed share their batches (`SeedBatches`), so a seed group's first layer is one wide matmul;
members come sorted by seed group, so each group's weights are one slice of the stack.

Everything after the gradient is the members' own: each member's optimizer and LR scheduler are the
ones its module's `configure_optimizers` returns (stepped as one by `MemberOptimizers`, so Lightning's
automatic optimization counts one step per batch), gradients are clipped per member with Lightning's
`clip_gradients`, and each member's own callbacks (ModelCheckpoint, EarlyStopping, lightsweep's) run
at the epoch's hooks with its metrics through its `MemberTrainer`: it stops, keeps its best checkpoint,
logs and stores its run's files as its separate run would.
"""

from __future__ import annotations

import functools
import itertools
import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback
from torch.func import functional_call, vmap

from lightsweep.data.base import epoch_order
from lightsweep.errors import LightsweepError
from lightsweep.models.base import Classifier
from lightsweep.vectorized.members import Member
from lightsweep.vectorized.optimizers import MemberOptimizers, MemberSchedulers, check_members

GROUP_STATE = "lightsweep_members"  # the group checkpoint's entry for what its members keep beyond weights


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
    """`members` (each holding its job's Classifier, built as its job builds it) trained as one model.

    The first member's module is the template: its network structure, loss and labels serve all (every
    member's parameters are stacked here). `seed_index[m]` is member m's seed group in the batches: 0,
    1, ... in order (members come sorted by seed).
    """

    def __init__(self, members: list[Member], seed_index: list[int]):
        super().__init__()
        self.members = list(members)  # a list: not submodules (Lightning moves only the stacked weights)
        template = self.members[0].module
        self.template = [template]
        self.names = [name for name, _ in template.named_parameters()]
        self.input_layer, self.rest = self.split(template)
        states = [dict(member.module.named_parameters()) for member in self.members]
        self.weights = torch.nn.ParameterList(
            torch.nn.Parameter(torch.stack([state[name].detach() for state in states])) for name in self.names
        )
        seed_index = [int(s) for s in seed_index]
        groups = max(seed_index) + 1
        if seed_index != sorted(seed_index) or set(seed_index) != set(range(groups)):
            raise ValueError(f"members must come sorted by seed group 0, 1, ...; got {seed_index}")
        self.group_sizes = [seed_index.count(s) for s in range(groups)]
        self.equal_groups = len(set(self.group_sizes)) == 1  # a comparison sweep's usual shape
        self.sums: dict[str, torch.Tensor] = {}
        self.saving: Member | None = None  # the member whose own checkpoint is being written
        self.last_losses: torch.Tensor | None = None
        self.batch_index = 0

    @property
    def stacked(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.weights))

    def bind(self) -> None:
        """Each member's parameters: its rows of the stacked weights, where Lightning has put them."""
        stacked = self.stacked
        for index, member in enumerate(self.members):
            member.bind(stacked, index)

    # --- set-up: each member's trainer view, optimizer and scheduler -----------------------------------
    def setup(self, stage: str) -> None:
        for member in self.members:
            member.attach(self.trainer)
            member.call("setup", stage)

    def configure_optimizers(self):
        self.bind()  # now: Lightning has moved the stack to its device and precision
        for member in self.members:
            member.configure()
        optimizer = MemberOptimizers(self.weights, self.members)
        if all(member.scheduler is None for member in self.members):
            return optimizer
        # Lightning asks after every batch; lr_scheduler_step steps each member's on its own interval.
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": MemberSchedulers(optimizer, self.members), "interval": "step"},
        }

    def on_fit_start(self) -> None:
        for member in self.members:
            if member.running:
                member.call("on_fit_start")

    def on_train_start(self) -> None:
        for member in self.members:
            if member.running:
                member.call("on_train_start")

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
        """Epoch sums as a run's epoch metrics accumulate them: loss x batch size (in the weights' precision),
        correct predictions, samples."""
        for key, value in (("loss", losses.detach() * n), ("correct", correct)):
            self.sums[f"{stage}/{key}"] = self.sums.get(f"{stage}/{key}", 0) + value
        self.sums[f"{stage}/n"] = self.sums.get(f"{stage}/n", 0) + n

    def epoch_values(self, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Each member's epoch loss (the weights' precision) and accuracy (float32, as torchmetrics')."""
        n = self.sums.pop(f"{stage}/n")
        losses = (self.sums.pop(f"{stage}/loss") / n).cpu()
        accs = (self.sums.pop(f"{stage}/correct").to(torch.float32) / n).cpu()
        return losses, accs

    # --- training ---------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        x, y = batch
        losses, correct, _ = self.run_members(x.to(self.weights[0].dtype), y, list(self.weights), shared=False)
        self.batch_index = batch_idx
        self.last_losses = losses.detach()
        self.accumulate("train", losses, correct, y.shape[1])
        finite = torch.isfinite(self.last_losses)
        if not bool(finite.all()):  # it takes no more steps; its run fails at the epoch's end, the others go on
            for index in (~finite).nonzero().flatten().tolist():
                self.members[index].diverged = True
        stepping = [member.stepping for member in self.members]
        if all(stepping):
            return losses.sum()
        if not any(stepping):
            return None  # (Lightning then skips the step)
        return torch.where(torch.tensor(stepping, device=losses.device), losses, torch.zeros_like(losses)).sum()

    def on_before_optimizer_step(self, optimizer) -> None:
        for index, member in enumerate(self.members):
            if member.stepping:
                member.bind_grads(list(self.weights), index)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Each member's gradients clipped by its own job's `trainer.gradient_clip_val` (by their norm, or
        values), over its own optimizer's parameters, with Lightning's `clip_gradients`, as its separate
        run's are (the group's trainer has no clipping of its own)."""
        for member in self.members:
            value = member.cfg.trainer.get("gradient_clip_val")
            if member.stepping and value:
                self.clip_gradients(
                    member.optimizer, value, member.cfg.trainer.get("gradient_clip_algorithm") or "norm"
                )

    def lr_scheduler_step(self, scheduler, metric) -> None:
        """After each batch (Lightning's call): each member's scheduler on its own interval and frequency,
        as Lightning steps a run's (ReduceLROnPlateau at the epoch's end, with the member's metric)."""
        trainer = self.trainer
        last = self.batch_index + 1 == trainer.num_training_batches or trainer.is_last_batch
        for member in self.members:
            config = member.scheduler
            if config is None or config.reduce_on_plateau or not member.stepping:
                continue
            if config.interval == "step":
                due = (self.batch_index + 1) % config.frequency == 0
            else:
                due = last and (trainer.current_epoch + 1) % config.frequency == 0
            if due:
                member.module.lr_scheduler_step(config.scheduler, None)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        step = self.trainer.global_step
        if step % self.trainer.log_every_n_steps == 0:  # where Lightning logs a run's step metrics
            losses = self.last_losses.tolist()
            for index, member in enumerate(self.members):
                if member.stepping:
                    member.log({"train/loss": losses[index]}, step - 1)

    def on_train_epoch_start(self) -> None:
        for member in self.members:
            if member.running:
                member.call("on_train_epoch_start")

    def on_train_epoch_end(self) -> None:
        losses, accs = self.epoch_values("train")
        last = self.last_losses.cpu()
        trainer = self.trainer
        step, epoch = trainer.global_step - 1, trainer.current_epoch
        running = [(index, member) for index, member in enumerate(self.members) if member.running]
        for index, member in running:
            member.metrics.update(
                {"train/loss": last[index], "train/loss_epoch": losses[index], "train/acc": accs[index]}
            )
        # Lightning's order: the callbacks that watch no metric, then those that do (checkpoints, early
        # stopping), then ReduceLROnPlateau, then the epoch's metrics go to the logger.
        for _, member in running:
            member.call("on_train_epoch_end", monitoring=False)
        for index, member in running:
            member.call("on_train_epoch_end", monitoring=True)
            self.step_on_plateau(member)
            member.log({"train/loss_epoch": float(losses[index]), "train/acc": float(accs[index])}, step)
            can_stop = epoch + 1 >= (trainer.min_epochs or 0)
            if member.diverged or (member.should_stop and can_stop):
                member.ended = (epoch + 1, trainer.global_step)
        if not any(member.running for member in self.members):
            trainer.should_stop = True

    def step_on_plateau(self, member: Member) -> None:
        config = member.scheduler
        if config is None or not config.reduce_on_plateau or member.diverged:
            return
        if (self.trainer.current_epoch + 1) % config.frequency:
            return
        value = member.metrics.get(config.monitor)
        if value is None:
            if config.strict:
                raise LightsweepError(
                    f"scheduler.monitor={config.monitor} is not a metric of the run ({', '.join(member.metrics)}): "
                    "pass one of them"
                )
            return
        member.module.lr_scheduler_step(config.scheduler, value)

    def on_fit_end(self) -> None:
        trainer = self.trainer
        for member in self.members:
            if member.ended is None:
                member.ended = (trainer.current_epoch, trainer.global_step)
            member.fit_metrics = dict(member.metrics)
            member.call("on_train_end")
            member.call("on_fit_end")

    def teardown(self, stage: str) -> None:
        # After every member's end-of-stage hooks: their figures draw meanwhile, several at once.
        for member in self.members:
            if member.trainer is not None:
                member.call("teardown", stage)

    # --- validation ---------------------------------------------------------------------------------------
    def on_validation_start(self) -> None:
        # (before the batched validation: a Schedule-Free member's callback puts its eval-mode weights in place)
        for member in self.members:
            if member.running:
                member.call("on_validation_start")

    def validation_step(self, batch, batch_idx):
        x, y = batch
        losses, correct, _ = self.run_members(x.to(self.weights[0].dtype), y, list(self.weights), shared=True)
        self.accumulate("val", losses, correct, len(y))

    def on_validation_epoch_end(self) -> None:
        losses, accs = self.epoch_values("val")
        if self.trainer.sanity_checking:
            return
        step = self.trainer.global_step - 1
        for index, member in enumerate(self.members):
            if member.running:
                member.metrics.update({"val/loss": losses[index], "val/acc": accs[index]})
                member.call("on_validation_epoch_end")
                member.log({"val/loss": float(losses[index]), "val/acc": float(accs[index])}, step)

    def on_validation_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        for member in self.members:
            if member.running:
                member.call("on_validation_end")

    # --- test: each tested member's best weights, its own test outputs --------------------------------
    def on_test_start(self) -> None:
        self.bind()
        for member in self.tested:
            best = member.trainer.checkpoint_callback.best_model_path if member.trainer.checkpoint_callback else ""
            if best:  # as a run tests: the best checkpoint's weights, loaded into its module (the stack's rows)
                state = torch.load(best, map_location=self.device, weights_only=True)["state_dict"]
                member.module.load_state_dict(state)
            member.call("on_test_start")  # (after the weights are loaded, as Lightning calls a run's)

    @property
    def tested(self) -> list[Member]:
        return [member for member in self.members if member.tested]

    def on_test_epoch_start(self) -> None:
        for member in self.tested:
            member.module.test_confusion.reset()

    def test_step(self, batch, batch_idx):
        x, y = batch
        losses, correct, predicted = self.run_members(x.to(self.weights[0].dtype), y, list(self.weights), shared=True)
        self.accumulate("test", losses, correct, len(y))
        labels = self.template[0].class_index(y)
        for index, member in enumerate(self.members):
            if member.tested:
                member.module.test_confusion.update(predicted[index], labels)

    def on_test_epoch_end(self) -> None:
        losses, accs = self.epoch_values("test")
        for index, member in enumerate(self.members):
            if member.tested:
                member.metrics.update({"test/loss": losses[index], "test/acc": accs[index]})
                member.call("on_test_epoch_end")
                # at the run's own last step, as Lightning logs a run's test metrics
                member.log(
                    {"test/loss": float(losses[index]), "test/acc": float(accs[index])}, member.trainer.global_step
                )

    def on_test_end(self) -> None:
        for member in self.tested:
            member.call("on_test_end")

    # --- checkpoints: the group's own (to resume it), and each member's (a single run's) ----------------
    def save_member_checkpoint(self, member: Member, filepath, weights_only=None, storage_options=None) -> None:
        """`member`'s own checkpoint, written by Lightning: the group's checkpoint with the member's
        weights, optimizer and scheduler state, callbacks and hyperparameters in place of the group's."""
        optimizer = self.trainer.optimizers[0] if self.trainer.optimizers else None
        self.saving = member
        if isinstance(optimizer, MemberOptimizers):
            optimizer.saving = member
        try:
            self.trainer.save_checkpoint(filepath, weights_only, storage_options)
        finally:
            self.saving = None
            if isinstance(optimizer, MemberOptimizers):
                optimizer.saving = None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.saving is None:
            checkpoint[GROUP_STATE] = [member.group_state() for member in self.members]
            return
        entries = self.saving.checkpoint_entries()
        checkpoint.update(
            {
                k: v
                for k, v in entries.items()
                if k in checkpoint or k not in ("callbacks", "optimizer_states", "lr_schedulers")
            }
        )

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        states = checkpoint.get(GROUP_STATE)
        if states is None:
            raise LightsweepError(
                "this checkpoint is not a vectorized group's: a group resumes only from its own last.ckpt"
            )
        check_members("members'", [state["label"] for state in states], self.members)
        for member, state in zip(self.members, states):
            member.load_group_state(state)


class FinishDrawnRuns(Callback):
    """At each epoch's end, an earlier group's members whose figures are drawn get them stored and their
    runs ended (lightsweep.plots.drawer): that work fits between this group's epochs."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        from lightsweep.plots.drawer import workers

        workers().poll()


class MembersOnException(Callback):
    """A group's error, interrupt or requeue reaches each member's own callbacks (its interrupt
    checkpoint) and logger (what it queued is sent, as Lightning finalizes a run's logger then)."""

    def on_exception(self, trainer, pl_module, exception) -> None:
        for member in pl_module.members:
            if member.running and member.trainer is not None:
                member.call("on_exception", exception)
            if member.logger:
                member.logger.save()


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
