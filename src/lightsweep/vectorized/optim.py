"""torch.optim update rules for M sweep members trained as one batched model.

Every parameter has a leading member dimension M. `MemberOptimizer` applies to each member slice
`p[m]` exactly the update its separate job's `torch.optim` optimizer would (the single-tensor code
paths of SGD, Adam, AdamW, Adagrad and RMSprop, same operation order), with that member's own
hyperparameters. Members are grouped by update rule; within a rule every hyperparameter is a (M_rule,)
tensor broadcast over the member dimension, so a step is a few tensor ops per parameter and rule,
with no Python loop over members, updating parameters and buffers in place. A rule whose members
are the same rows of equal blocks (a vectorized group orders its members by seed, then rule) updates
a strided view of each parameter; other members are gathered and put back.

Per-member learning rate: `optimizer.member_lr`, a float64 tensor of shape (M,) (it is
`param_groups[0]["lr"]`, so it is saved with the optimizer). Whatever sets it in place
(`optimizer.member_lr[m] = 0.01`, `optimizer.member_lr.mul_(...)`) takes effect at the next step;
`MemberLRScheduler` does so once per epoch for StepLR and CosineAnnealingLR members.

Stopped members: `optimizer.active` (M,) bool (`param_groups[0]["active"]`). A member set inactive
keeps its parameters and optimizer state bit for bit; its step count stops too.

State (`optimizer.state[p]`): one dict per rule present, `{"sgd"|"adam"|"adagrad"|"rmsprop": {...}}`,
each holding "step" (M_rule,) float64 (steps taken while active) and the rule's buffers, shaped
(M_rule, *p.shape[1:]), named as torch names them. `state_dict()` also stores the member specs, and
`load_state_dict` refuses a state saved for other members. `member_state_dict(m)` returns member m's
state as the state_dict of its torch optimizer over a single model whose parameters are the member
slices, in the same order: `torch.optim.Adam(model.parameters()).load_state_dict(...)` continues it.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim.lr_scheduler import LRScheduler

# Spec name -> torch class. Adam and AdamW share one rule ("adam") with a per-member decoupled flag.
OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "adagrad": torch.optim.Adagrad,
    "rmsprop": torch.optim.RMSprop,
}
RULES = {"sgd": "sgd", "adam": "adam", "adamw": "adam", "adagrad": "adagrad", "rmsprop": "rmsprop"}

# Options that change only the kernel or autograd, never the arithmetic of a step: accepted, ignored.
MATH_NEUTRAL = {"foreach", "fused", "capturable", "differentiable"}
# Per rule, the torch group keys the vectorized rule implements.
SUPPORTED = {
    "sgd": {"lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"},
    "adam": {"lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "decoupled_weight_decay"},
    "adagrad": {"lr", "lr_decay", "weight_decay", "eps", "initial_accumulator_value", "maximize"},
    "rmsprop": {"lr", "alpha", "eps", "weight_decay", "momentum", "centered", "maximize"},
}


def resolve_target(target: Any) -> str:
    """Spec name ("adam", ...) of a torch.optim class, its dotted path (Hydra `_target_`) or a spec name."""
    for name, cls in OPTIMIZERS.items():
        dotted = (f"torch.optim.{cls.__name__}", f"{cls.__module__}.{cls.__qualname__}")
        if target is cls or target == name or target in dotted:
            return name
    raise ValueError(f"vectorized sweeps do not support optimizer {target!r}; supported: {sorted(OPTIMIZERS)}")


def member_spec(target: Any, kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One member's spec `{"name": ..., **hyperparameters}` (torch defaults filled in) from its optimizer.

    `target` is a Hydra `_target_` string, a torch.optim class, a spec name, or the `functools.partial`
    that Hydra builds from a `_partial_: true` optimizer config (then its keywords are the kwargs).
    Raises ValueError naming the first option that the vectorized rules cannot reproduce.
    """
    kwargs = dict(kwargs or {})
    if isinstance(target, functools.partial):
        kwargs = {**target.keywords, **kwargs}
        target = target.func
    name = resolve_target(target)
    cls = OPTIMIZERS[name]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "params"}
    for key in kwargs:
        if key not in accepted:
            raise ValueError(f"{cls.__name__} has no option {key!r}")
    kwargs = {k: (v.item() if isinstance(v, Tensor) else v) for k, v in kwargs.items()}
    if "betas" in kwargs:
        kwargs["betas"] = tuple(float(b) for b in kwargs["betas"])
    # The torch class itself validates the values and fills in its defaults.
    group = dict(cls([torch.zeros(1)], **kwargs).param_groups[0])
    del group["params"]
    for key, value in group.items():
        if key in MATH_NEUTRAL:
            continue
        if key not in SUPPORTED[RULES[name]]:
            raise ValueError(f"{cls.__name__} option {key!r} is not supported by vectorized sweeps")
        if key == "maximize" and value:
            raise ValueError(f"{cls.__name__} option 'maximize' is not supported by vectorized sweeps")
    return {"name": name, **{k: v for k, v in group.items() if k in accepted and k not in MATH_NEUTRAL}}


def normalize(member: Mapping[str, Any]) -> dict[str, Any]:
    """`member_spec` of a spec dict `{"name": ..., **hyperparameters}`."""
    return member_spec(member["name"], {k: v for k, v in member.items() if k != "name"})


def bcast(values: Tensor, like: Tensor, lead: tuple[int, ...] = (-1,)) -> Tensor:
    """(M_r,) -> (*lead, 1, ..., 1) in `like`'s dtype, to broadcast over `like`, whose member
    dimensions are `lead`: (M_r,), or (blocks, rows) for a strided view (`Rule.view`)."""
    if values.dtype != torch.bool:
        values = values.to(like.dtype)
    return values.view(*lead, *([1] * (like.dim() - len(lead))))


def blocks(members: Sequence[int], total: int) -> tuple[int, int, int, int] | None:
    """(groups, size, start, length) when `members` are rows start..start+length-1 of each of
    `groups` equal blocks of `size` rows (of `total`); then they are a strided view, no copy."""
    n = len(members)
    for groups in range(1, n + 1):
        if n % groups or total % groups:
            continue
        size, length, start = total // groups, n // groups, members[0]
        expected = [start + g * size + j for g in range(groups) for j in range(length)]
        if start + length <= size and list(members) == expected:
            return groups, size, start, length
    return None


def select(mask: Tensor, new: Tensor, old: Tensor, uniform: bool | None) -> Tensor:
    """`new` where `mask` (per member), else `old`; `uniform`: the mask's one value when all agree."""
    if uniform is None:
        return torch.where(mask, new, old)
    return new if uniform else old


class Rule:
    """The members of one update rule: their positions in the member dimension and hyperparameters.

    A step updates the parameters and buffers in place, operation for operation as torch's
    single-tensor code path, with the per-member hyperparameters as (M_r, 1, ...) tensors.
    """

    def __init__(self, name: str, members: Sequence[int], specs: Sequence[Mapping[str, Any]], device, total: int):
        self.name = name
        self.members = list(members)
        self.index = torch.tensor(self.members, dtype=torch.long, device=device)
        # Members sorted by seed group, then by rule (as vectorized groups are) are a regular pattern.
        self.blocks = blocks(self.members, total)
        self.lead = (self.blocks[0], self.blocks[3]) if self.blocks else (len(self.members),)

        def hp(get) -> Tensor:
            return torch.tensor([get(s) for s in specs], dtype=torch.float64, device=device)

        def flag(key: str) -> Tensor:
            return torch.tensor([bool(s.get(key, False)) for s in specs], device=device)

        h: dict[str, Tensor] = {"weight_decay": hp(lambda s: s["weight_decay"])}
        if name == "sgd":
            h.update(momentum=hp(lambda s: s["momentum"]), dampening=hp(lambda s: s["dampening"]))
            h["nesterov"] = flag("nesterov")
            h["uses_momentum"] = h["momentum"] != 0
        elif name == "adam":
            h.update(beta1=hp(lambda s: s["betas"][0]), beta2=hp(lambda s: s["betas"][1]), eps=hp(lambda s: s["eps"]))
            h["amsgrad"] = flag("amsgrad")
            h["decoupled"] = torch.tensor(
                [s["name"] == "adamw" or bool(s.get("decoupled_weight_decay")) for s in specs], device=device
            )
        elif name == "adagrad":
            h.update(lr_decay=hp(lambda s: s["lr_decay"]), eps=hp(lambda s: s["eps"]))
            h["initial_accumulator_value"] = hp(lambda s: s["initial_accumulator_value"])
        else:
            h.update(alpha=hp(lambda s: s["alpha"]), eps=hp(lambda s: s["eps"]), momentum=hp(lambda s: s["momentum"]))
            h["centered"] = flag("centered")
            h["uses_momentum"] = h["momentum"] > 0
        self.h = h
        # Derived per-member factors, as torch derives them from its Python floats.
        if name == "sgd":
            h["one_minus_dampening"] = 1 - h["dampening"]
        elif name == "adam":
            h["one_minus_beta1"], h["one_minus_beta2"] = 1 - h["beta1"], 1 - h["beta2"]
        elif name == "rmsprop":
            h["one_minus_alpha"] = 1 - h["alpha"]
        # Boolean hyperparameters whose members all agree are Python values: the other branch is skipped.
        self.uniform = {
            k: (bool(v[0]) if bool((v == v[0]).all()) else None) for k, v in h.items() if v.dtype == torch.bool
        }
        self.decay = bool(h["weight_decay"].any())
        self.broadcast: dict[tuple, dict[str, Tensor]] = {}

    def of(self, key: str, rows: Tensor | None) -> Tensor:
        """Hyperparameter `key` of `rows` (None: all members), flat (M_r,)."""
        return self.h[key] if rows is None else self.h[key].index_select(0, rows)

    def view(self, t: Tensor) -> Tensor:
        """The rule's members of a batched (M, ...) tensor, as a view (needs `blocks`)."""
        groups, size, start, length = self.blocks
        return t.view(groups, size, *t.shape[1:])[:, start : start + length]

    def factors(self, like: Tensor, rows: Tensor | None, lead: tuple[int, ...]) -> dict[str, Tensor]:
        """The hyperparameters of `rows` (None: all), broadcast over `like` (cached for all rows)."""
        key = (like.dim(), like.dtype, like.device, lead)
        if rows is None and key in self.broadcast:
            return self.broadcast[key]
        h = {k: bcast(self.of(k, rows), like, lead) for k in self.h}
        if rows is None:
            self.broadcast[key] = h
        return h

    def init_state(self, p: Tensor) -> dict[str, Tensor]:
        shape = (len(self.members), *p.shape[1:])
        st = {"step": torch.zeros(len(self.members), dtype=torch.float64, device=p.device)}

        def zeros() -> Tensor:
            return torch.zeros(shape, dtype=p.dtype, device=p.device)

        h = self.h
        if self.name == "sgd" and bool(h["uses_momentum"].any()):
            st["momentum_buffer"] = zeros()
        elif self.name == "adam":
            st["exp_avg"], st["exp_avg_sq"] = zeros(), zeros()
            if bool(h["amsgrad"].any()):
                st["max_exp_avg_sq"] = zeros()
        elif self.name == "adagrad":
            st["sum"] = zeros() + bcast(h["initial_accumulator_value"], p)
        elif self.name == "rmsprop":
            st["square_avg"] = zeros()
            if bool(h["uses_momentum"].any()):
                st["momentum_buffer"] = zeros()
            if bool(h["centered"].any()):
                st["grad_avg"] = zeros()
        return st

    def update(self, p: Tensor, g: Tensor, st: dict[str, Tensor], lr: Tensor, step: Tensor, rows, lead) -> None:
        """One step of the rule's (active) members: `p` and the buffers in `st` in place.

        `p`, `g`, `st`'s buffers hold the members `rows` of the rule (None: all of them), in order,
        in member dimensions `lead`; `lr` and `step` (counted after this step) are flat, (M_r,).
        """
        h = self.factors(p, rows, lead)
        u = self.uniform if rows is None else {k: None for k in self.uniform}

        def b(values: Tensor) -> Tensor:
            return bcast(values, p, lead)

        lr_b = b(lr)
        if self.decay and not (self.name == "adam" and u.get("decoupled") is True):
            # Coupled weight decay (grad.add(param, alpha=weight_decay)); a zero decay adds an exact 0.
            coupled = torch.addcmul(g, p, h["weight_decay"])
            g = coupled if self.name != "adam" else select(h["decoupled"], g, coupled, u["decoupled"])
        if self.name == "sgd":
            buf = st.get("momentum_buffer")
            if buf is not None:
                first = step == 1  # torch's first momentum step stores the gradient itself
                if bool(first.all()):
                    buf.copy_(g)
                elif not bool(first.any()):
                    buf.mul_(h["momentum"]).addcmul_(g, h["one_minus_dampening"])
                else:
                    buf.copy_(torch.where(b(first), g, buf.mul(h["momentum"]).addcmul_(g, h["one_minus_dampening"])))
                d = buf
                if u["nesterov"] is not False:
                    d = select(h["nesterov"], torch.addcmul(g, buf, h["momentum"]), buf, u["nesterov"])
                g = select(h["uses_momentum"], d, g, u["uses_momentum"])
            p.addcmul_(g, -lr_b)
            return
        if self.name == "adam":
            if self.decay and u["decoupled"] is not False:
                # param.mul_(1 - lr * weight_decay), the factor in float64
                decayed = b(1 - lr * self.of("weight_decay", rows))
                p.mul_(decayed if u["decoupled"] else torch.where(h["decoupled"], decayed, torch.ones_like(decayed)))
            st["exp_avg"].lerp_(g, h["one_minus_beta1"])
            sq = st["exp_avg_sq"].mul_(h["beta2"]).addcmul_(g * h["one_minus_beta2"], g)
            s = step.view(*lead, *([1] * (p.dim() - len(lead))))
            beta1, beta2 = self.of("beta1", rows), self.of("beta2", rows)
            # Scalar per-member coefficients in float64, as torch computes them in Python floats.
            step_size = (bcast(lr, s, lead) / (1 - bcast(beta1, s, lead) ** s)).to(p.dtype)
            bc2_sqrt = ((1 - bcast(beta2, s, lead) ** s) ** 0.5).to(p.dtype)
            if "max_exp_avg_sq" in st:
                top = st["max_exp_avg_sq"]
                torch.maximum(top, sq, out=top)
                sq = select(h["amsgrad"], top, sq, u["amsgrad"])
            denom = sq.sqrt().div_(bc2_sqrt).add_(h["eps"])
            p.addcmul_(torch.div(st["exp_avg"], denom, out=denom), -step_size)
            return
        if self.name == "adagrad":
            clr = lr / (1 + (step - 1) * self.of("lr_decay", rows))
            st["sum"].addcmul_(g, g)
            std = st["sum"].sqrt().add_(h["eps"])
            p.addcmul_(torch.div(g, std, out=std), -b(clr))
            return
        # rmsprop
        sq = st["square_avg"].mul_(h["alpha"]).addcmul_(g * h["one_minus_alpha"], g)
        if "grad_avg" in st:
            grad_avg = st["grad_avg"].lerp_(g, h["one_minus_alpha"])
            if u["centered"]:
                avg = sq.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
            else:
                avg = torch.where(h["centered"], sq.addcmul(grad_avg, grad_avg, value=-1).sqrt_(), sq.sqrt())
        else:
            avg = sq.sqrt()
        avg = avg.add_(h["eps"])
        if "momentum_buffer" in st:
            buf = st["momentum_buffer"].mul_(h["momentum"]).addcdiv_(g, avg)
            if u["uses_momentum"] is not True:
                d = select(h["uses_momentum"], buf, torch.div(g, avg), u["uses_momentum"])
            else:
                d = buf
            p.addcmul_(d, -lr_b)
            return
        p.addcmul_(torch.div(g, avg, out=avg), -lr_b)


def scalar_step(value: float) -> Tensor:
    """A torch.optim "step" state entry: a CPU float tensor, float64 only under a float64 default dtype."""
    dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    return torch.tensor(value, dtype=dtype)


class MemberOptimizer(torch.optim.Optimizer):
    """One optimizer for M members: `members[m]` is member m's spec (`member_spec` or `{"name": ..., **kw}`).

    `params`: the batched parameters (one group), each with leading dimension M = len(members).
    """

    def __init__(self, params: Iterable[Tensor], members: Sequence[Mapping[str, Any]]):
        self.members = [normalize(m) for m in members]
        params = list(params)
        if not params:
            raise ValueError("MemberOptimizer got no parameters")
        n = len(self.members)
        device = params[0].device
        for p in params:
            if p.dim() == 0 or p.shape[0] != n:
                raise ValueError(f"a parameter of shape {tuple(p.shape)} has no leading member dimension {n}")
        lr = torch.tensor([float(m["lr"]) for m in self.members], dtype=torch.float64, device=device)
        super().__init__(params, {"lr": lr, "active": torch.ones(n, dtype=torch.bool, device=device)})
        self.rules = []
        for rule in dict.fromkeys(RULES[m["name"]] for m in self.members):
            idx = [i for i, m in enumerate(self.members) if RULES[m["name"]] == rule]
            self.rules.append(Rule(rule, idx, [self.members[i] for i in idx], device, n))
        self.rule_of = {i: (r, pos) for r in self.rules for pos, i in enumerate(r.members)}

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        # One group: the member hyperparameters and lrs apply to every parameter.
        if self.param_groups:
            raise ValueError("MemberOptimizer holds a single parameter group")
        super().add_param_group(param_group)

    @property
    def member_lr(self) -> Tensor:
        return self.param_groups[0]["lr"]

    @property
    def active(self) -> Tensor:
        return self.param_groups[0]["active"]

    @active.setter
    def active(self, mask: Tensor) -> None:
        self.param_groups[0]["active"].copy_(mask)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        lr, active = self.member_lr, self.active
        params = [p for p in self.param_groups[0]["params"] if p.grad is not None]
        for p in params:
            if p.grad.is_sparse or p.is_complex():
                raise ValueError("MemberOptimizer supports dense real parameters only")
        for rule in self.rules:
            act = active.index_select(0, rule.index)
            # Only active members step; a stopped one keeps its parameters and state bit for bit.
            rows = None if bool(act.all()) else act.nonzero().flatten()
            if rows is not None and rows.numel() == 0:
                continue
            # All members of a regular rule: views, updated in place; else gathered and put back.
            strided = rows is None and rule.blocks is not None
            index = rule.index if rows is None else rule.index.index_select(0, rows)
            member_lr = lr.index_select(0, index)
            lead = rule.lead if strided else (len(index),)
            for p in params:
                state = self.state[p]
                st = state.get(rule.name)
                if st is None:
                    st = state[rule.name] = rule.init_state(p)
                st["step"] += act
                step = st["step"] if rows is None else st["step"].index_select(0, rows)
                buffers = {k: v for k, v in st.items() if k != "step"}
                if strided:
                    value, grad = rule.view(p.detach()), rule.view(p.grad)
                    buffers = {k: v.view(*lead, *v.shape[1:]) for k, v in buffers.items()}
                else:
                    value, grad = p.detach().index_select(0, index), p.grad.index_select(0, index)
                    if rows is not None:
                        buffers = {k: v.index_select(0, rows) for k, v in buffers.items()}
                rule.update(value, grad, buffers, member_lr, step, rows, lead)
                if not strided:
                    p.detach().index_copy_(0, index, value)
                if rows is not None:
                    for k, v in buffers.items():
                        st[k].index_copy_(0, rows, v)
        return loss

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "members": [dict(m) for m in self.members]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("members")
        if saved is not None and [normalize(m) for m in saved] != self.members:
            raise ValueError("this optimizer state was saved for other sweep members")
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "members"})
        group = self.param_groups[0]
        device = group["params"][0].device
        group["lr"] = group["lr"].to(device=device, dtype=torch.float64)
        group["active"] = group["active"].to(device=device, dtype=torch.bool)

    def member_state_dict(self, member: int) -> dict[str, Any]:
        """Member `member`'s state as its torch optimizer's state_dict over the member's own parameters."""
        spec = self.members[member]
        rule, pos = self.rule_of[member]
        cls = OPTIMIZERS[spec["name"]]
        params = self.param_groups[0]["params"]
        # A real torch optimizer supplies the exact group layout that its load_state_dict expects.
        kwargs = {k: v for k, v in spec.items() if k != "name"}
        group = cls([torch.zeros(1)], **kwargs).state_dict()["param_groups"][0]
        group.update(lr=float(self.member_lr[member]), params=list(range(len(params))))
        state: dict[int, dict[str, Tensor]] = {}
        for i, p in enumerate(params):
            st = self.state.get(p, {}).get(rule.name)
            steps = 0.0 if st is None else float(st["step"][pos])
            if rule.name == "adagrad":  # torch creates Adagrad's state in __init__
                acc = torch.full_like(p.detach()[member], spec["initial_accumulator_value"])
                state[i] = {"step": scalar_step(steps), "sum": acc if st is None else st["sum"][pos].clone()}
                continue
            if steps == 0:  # torch creates the other states at the first step
                continue
            if rule.name == "sgd":
                if spec["momentum"] != 0:
                    state[i] = {"momentum_buffer": st["momentum_buffer"][pos].clone()}
                continue
            keys = {"adam": ["exp_avg", "exp_avg_sq"], "rmsprop": ["square_avg"]}[rule.name]
            if spec.get("amsgrad"):
                keys.append("max_exp_avg_sq")
            if rule.name == "rmsprop" and spec["momentum"] > 0:
                keys.append("momentum_buffer")
            if spec.get("centered"):
                keys.append("grad_avg")
            state[i] = {"step": scalar_step(steps), **{k: st[k][pos].clone() for k in keys}}
        return {"state": state, "param_groups": [group]}


def schedule_spec(target: Any = None, kwargs: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """One member's lr schedule from its scheduler `_target_` (or Hydra partial); None: constant lr."""
    kwargs = dict(kwargs or {})
    if isinstance(target, functools.partial):
        kwargs = {**target.keywords, **kwargs}
        target = target.func
    if target is None:
        return None
    classes = {"step": torch.optim.lr_scheduler.StepLR, "cosine": torch.optim.lr_scheduler.CosineAnnealingLR}
    for name, cls in classes.items():
        if target is cls or target == name or target in (f"torch.optim.lr_scheduler.{cls.__name__}",):
            signature = inspect.signature(cls.__init__).parameters
            for key, value in kwargs.items():
                if key not in signature or key in ("self", "optimizer") or (key == "last_epoch" and value != -1):
                    raise ValueError(f"{cls.__name__} option {key!r} is not supported by vectorized sweeps")
            defaults = {k: v.default for k, v in signature.items() if k not in ("self", "optimizer", "last_epoch")}
            spec = {**defaults, **kwargs}
            if any(v is inspect.Parameter.empty for v in spec.values()):
                raise ValueError(f"{cls.__name__} needs {[k for k, v in spec.items() if v is inspect.Parameter.empty]}")
            return {"name": name, **spec}
    raise ValueError(f"vectorized sweeps do not support lr scheduler {target!r}; supported: StepLR, CosineAnnealingLR")


class MemberLRScheduler(LRScheduler):
    """Per-member StepLR / CosineAnnealingLR, stepped once per epoch, writing `optimizer.member_lr` in place.

    `schedules[m]`: `schedule_spec(...)` of member m, or None for a constant lr. Follows torch's
    recursive (chainable) formulas, so the lrs equal torch's epoch by epoch.
    """

    def __init__(self, optimizer: MemberOptimizer, schedules: Sequence[Mapping[str, Any] | None]):
        # LRScheduler.__init__ is not called: it would alias the lr tensor as "initial_lr" and step once.
        self.optimizer = optimizer
        lr = optimizer.member_lr
        if len(schedules) != lr.numel():
            raise ValueError(f"{len(schedules)} schedules for {lr.numel()} members")
        specs = [
            schedule_spec(s["name"], {k: v for k, v in s.items() if k != "name"}) if s else None for s in schedules
        ]

        def col(key: str, default: float) -> Tensor:
            values = [float(s[key]) if s and key in s else default for s in specs]
            return torch.tensor(values, dtype=torch.float64, device=lr.device)

        self.kind = torch.tensor([{None: 0, "step": 1, "cosine": 2}[s and s["name"]] for s in specs], device=lr.device)
        self.step_size, self.gamma = col("step_size", 1.0), col("gamma", 1.0)
        self.t_max, self.eta_min = col("T_max", 1.0), col("eta_min", 0.0)
        self.base_lrs = [lr.clone()]
        self.last_epoch = 0

    def step(self, epoch: int | None = None) -> None:  # type: ignore[override]
        if epoch is not None:
            raise ValueError("MemberLRScheduler steps one epoch at a time")
        self.last_epoch += 1
        e = self.last_epoch
        lr, base, t, eta = self.optimizer.member_lr, self.base_lrs[0], self.t_max, self.eta_min
        step_lr = torch.where(torch.remainder(torch.full_like(lr, e), self.step_size) == 0, lr * self.gamma, lr)
        restart = torch.remainder(e - 1 - t, 2 * t) == 0
        cos_lr = torch.where(
            restart,
            lr + (base - eta) * (1 - torch.cos(math.pi / t)) / 2,
            (1 + torch.cos(math.pi * e / t)) / (1 + torch.cos(math.pi * (e - 1) / t)) * (lr - eta) + eta,
        )
        lr.copy_(torch.where(self.kind == 1, step_lr, torch.where(self.kind == 2, cos_lr, lr)))

    def get_last_lr(self) -> list[Tensor]:
        return [self.optimizer.member_lr.clone()]

    def state_dict(self) -> dict[str, Any]:
        return {"last_epoch": self.last_epoch, "base_lrs": [b.clone() for b in self.base_lrs]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_epoch = state_dict["last_epoch"]
        self.base_lrs = [b.to(self.optimizer.member_lr.device) for b in state_dict["base_lrs"]]
