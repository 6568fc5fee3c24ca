"""MemberOptimizer / MemberLRScheduler: every member slice follows its own torch.optim job exactly (float64)."""

from __future__ import annotations

import functools
import io

import pytest
import torch
from hydra.utils import instantiate

from lightsweep.vectorized.optim import (
    OPTIMIZERS,
    MemberLRScheduler,
    MemberOptimizer,
    member_spec,
    schedule_spec,
)

TOL = 1e-10
F64 = torch.float64

# The project's conf/optimizer/*.yaml.
PROJECT = [
    {"name": "sgd", "lr": 0.1, "momentum": 0.0, "nesterov": False, "weight_decay": 0.0},
    {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0},
    {"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0},
    {"name": "adagrad", "lr": 0.05, "lr_decay": 0.0, "weight_decay": 0.0, "eps": 1e-10},
    {"name": "rmsprop", "lr": 1e-3, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0, "weight_decay": 0.0},
    {"name": "adam", "lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0},
    {"name": "adamw", "lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2},
]
VARIANTS = [
    {"name": "sgd", "lr": 0.03, "weight_decay": 0.1},
    {"name": "sgd", "lr": 0.02, "momentum": 0.8, "dampening": 0.3, "weight_decay": 0.05},
    {"name": "sgd", "lr": 0.02, "momentum": 0.5, "nesterov": True, "weight_decay": 0.01},
    {"name": "adagrad", "lr": 0.1, "lr_decay": 0.1, "weight_decay": 0.02, "initial_accumulator_value": 0.1},
    {"name": "rmsprop", "lr": 0.01, "momentum": 0.5},
    {"name": "rmsprop", "lr": 0.01, "alpha": 0.9, "centered": True},
    {"name": "rmsprop", "lr": 0.005, "momentum": 0.3, "centered": True, "weight_decay": 0.1},
    {"name": "adam", "lr": 0.01, "betas": (0.8, 0.99), "amsgrad": True},
    {"name": "adam", "lr": 0.01, "weight_decay": 0.1},
    {"name": "adam", "lr": 0.01, "weight_decay": 0.1, "decoupled_weight_decay": True},
    {"name": "adamw", "lr": 0.02, "weight_decay": 0.05, "amsgrad": True, "eps": 1e-6},
]
STEP = {"name": "step", "step_size": 2, "gamma": 0.5}
COSINE = {"name": "cosine", "T_max": 3, "eta_min": 1e-4}


def torch_scheduler(optimizer, schedule):
    if schedule is None:
        return None
    kwargs = {k: v for k, v in schedule.items() if k != "name"}
    if schedule["name"] == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, **kwargs)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, **kwargs)


class Pair:
    """A batched model under MemberOptimizer and, per member, a separate model under its torch optimizer."""

    def __init__(self, members, schedules=None, seed=0):
        self.members, self.m = members, len(members)
        gen = torch.Generator().manual_seed(seed)
        init = [torch.randn(self.m, 3, 2, generator=gen, dtype=F64), torch.randn(self.m, 2, generator=gen, dtype=F64)]
        self.x = torch.randn(6, 3, generator=gen, dtype=F64)
        self.y = torch.randn(6, 2, generator=gen, dtype=F64)
        self.gen = gen
        self.batched = [torch.nn.Parameter(t.clone()) for t in init]
        self.opt = MemberOptimizer(self.batched, members)
        self.sched = MemberLRScheduler(self.opt, schedules) if schedules else None
        self.singles, self.opts, self.scheds = [], [], []
        for i, spec in enumerate(members):
            params = [torch.nn.Parameter(t[i].clone()) for t in init]
            opt = OPTIMIZERS[spec["name"]](params, **{k: v for k, v in spec.items() if k != "name"})
            self.singles.append(params)
            self.opts.append(opt)
            self.scheds.append(torch_scheduler(opt, schedules[i]) if schedules else None)

    def loss(self, w, b):
        # Least squares, so the gradient depends on the trajectory.
        return ((self.x @ w + b.unsqueeze(-2) - self.y) ** 2).sum() / len(self.x)

    def steps(self, n, epoch_every=3, stopped=(), batched=True, singles=True):
        for k in range(n):
            noise = [0.1 * torch.randn(p.shape, generator=self.gen, dtype=F64) for p in self.batched]
            if batched:
                self.opt.zero_grad()
                self.loss(*self.batched).backward()
                for p, e in zip(self.batched, noise):
                    p.grad += e
                self.opt.step()
            for i in range(self.m) if singles else ():
                if i in stopped:
                    continue
                self.opts[i].zero_grad()
                self.loss(*self.singles[i]).backward()
                for p, e in zip(self.singles[i], noise):
                    p.grad += e[i]
                self.opts[i].step()
            if (k + 1) % epoch_every == 0:
                if self.sched and batched:
                    self.sched.step()
                for i, s in enumerate(self.scheds if singles else ()):
                    if s is not None and i not in stopped:
                        s.step()

    def max_diff(self):
        return max(
            (bp[i] - sp).abs().max().item() for i in range(self.m) for bp, sp in zip(self.batched, self.singles[i])
        )


def test_project_optimizers_match_torch():
    pair = Pair(PROJECT)
    pair.steps(30)
    assert pair.max_diff() <= TOL
    moved = (pair.batched[0] - Pair(PROJECT).batched[0]).abs().amax(dim=(1, 2))
    assert bool((moved > 1e-4).all())


def test_variants_match_torch():
    pair = Pair(VARIANTS + PROJECT)
    pair.steps(30)
    assert pair.max_diff() <= TOL


@pytest.mark.parametrize("members", [PROJECT, VARIANTS], ids=["project", "variants"])
def test_schedulers_match_torch(members):
    schedules = [[STEP, COSINE, None][i % 3] for i in range(len(members))]
    pair = Pair(members, schedules)
    pair.steps(30)  # 10 epochs: StepLR decays 5 times, cosine passes its T_max restart branch
    assert pair.max_diff() <= TOL
    for i, opt in enumerate(pair.opts):
        assert pair.opt.member_lr[i].item() == pytest.approx(opt.param_groups[0]["lr"], rel=1e-14, abs=1e-18)


@pytest.mark.parametrize(
    "schedule",
    [
        STEP,
        {"name": "step", "step_size": 3, "gamma": 0.9},
        COSINE,
        {"name": "cosine", "T_max": 1},
        {"name": "cosine", "T_max": 7, "eta_min": 0.01},
    ],
)
def test_scheduler_lr_per_epoch(schedule):
    base = [0.1, 0.03]
    param = torch.nn.Parameter(torch.zeros(2, 1, dtype=F64))
    opt = MemberOptimizer([param], [{"name": "sgd", "lr": lr} for lr in base])
    sched = MemberLRScheduler(opt, [schedule, None])
    ref = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1, dtype=F64))], lr=base[0])
    ref_sched = torch_scheduler(ref, schedule)
    for _ in range(25):
        ref.step()
        ref_sched.step()
        sched.step()
        assert opt.member_lr[0].item() == pytest.approx(ref.param_groups[0]["lr"], rel=1e-14, abs=1e-18)
        assert opt.member_lr[1].item() == base[1]


def test_members_in_seed_blocks_update_as_strided_views_and_match_torch():
    # A vectorized group's order: by seed group, then by rule. Each rule is then a strided view.
    members = PROJECT + PROJECT
    pair = Pair(members, [[STEP, COSINE, None][i % 3] for i in range(len(members))])
    assert [r.blocks for r in pair.opt.rules] == [(2, 7, 0, 3), (2, 7, 3, 1), (2, 7, 4, 1), (2, 7, 5, 2)]
    pair.steps(9)
    stopped = {2, 12}
    for i in stopped:  # then those rules gather their active members
        pair.opt.active[i] = False
    pair.steps(12, stopped=stopped)
    assert pair.max_diff() <= TOL


def test_inactive_members_stay_bit_identical():
    members = VARIANTS + PROJECT
    pair = Pair(members, [[STEP, COSINE, None][i % 3] for i in range(len(members))])
    pair.steps(9)
    stopped = {1, 7, 12}
    for i in stopped:
        pair.opt.active[i] = False
    frozen_params = [p.detach().clone() for p in pair.batched]
    frozen_state = {
        id(p): {r: {k: v.clone() for k, v in st.items()} for r, st in pair.opt.state[p].items()} for p in pair.batched
    }
    pair.steps(21, stopped=stopped)
    assert pair.max_diff() <= TOL  # the stopped torch jobs stopped after 9 steps too
    for p, frozen in zip(pair.batched, frozen_params):
        for i in range(len(members)):
            same = torch.equal(p[i], frozen[i])
            assert same if i in stopped else not same
    for p in pair.batched:
        for rule in pair.opt.rules:
            for key, value in pair.opt.state[p][rule.name].items():
                for pos, i in enumerate(rule.members):
                    if i in stopped:
                        assert torch.equal(value[pos], frozen_state[id(p)][rule.name][key][pos])


def test_member_state_dict_loads_into_torch_and_continues():
    members = VARIANTS + PROJECT
    pair = Pair(members)
    pair.steps(12)
    for i, spec in enumerate(members):
        extracted = pair.opt.member_state_dict(i)
        reference = pair.opts[i].state_dict()
        assert extracted["param_groups"] == reference["param_groups"]
        assert extracted["state"].keys() == reference["state"].keys()
        for k, st in reference["state"].items():
            assert st.keys() == extracted["state"][k].keys()
            for key, value in st.items():
                assert torch.allclose(extracted["state"][k][key].to(F64), value.to(F64), rtol=0, atol=TOL)
                assert extracted["state"][k][key].dtype == value.dtype
        # A single-model job resumed from the member's state continues like the member.
        params = [torch.nn.Parameter(p[i].detach().clone()) for p in pair.batched]
        opt = OPTIMIZERS[spec["name"]](params, **{k: v for k, v in spec.items() if k != "name"})
        opt.load_state_dict(extracted)
        pair.singles[i], pair.opts[i] = params, opt
    pair.steps(12)
    assert pair.max_diff() <= TOL


def test_member_state_dict_before_any_step():
    opt = MemberOptimizer([torch.nn.Parameter(torch.zeros(3, 2, dtype=F64))], PROJECT[3:6])
    for i, name in enumerate(["adagrad", "rmsprop", "adam"]):
        single = OPTIMIZERS[name]([torch.nn.Parameter(torch.zeros(2, dtype=F64))])
        extracted = opt.member_state_dict(i)
        assert extracted["state"].keys() == single.state_dict()["state"].keys()
        single.load_state_dict(extracted)


def test_state_dict_round_trip():
    members = VARIANTS + PROJECT
    schedules = [[STEP, COSINE, None][i % 3] for i in range(len(members))]
    pair = Pair(members, schedules, seed=3)
    pair.steps(10, singles=False)
    pair.opt.active[4] = False
    buffer = io.BytesIO()
    torch.save({"opt": pair.opt.state_dict(), "sched": pair.sched.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    params = [torch.nn.Parameter(p.detach().clone()) for p in pair.batched]
    resumed = MemberOptimizer(params, members)
    resumed.load_state_dict(saved["opt"])
    resumed_sched = MemberLRScheduler(resumed, schedules)
    resumed_sched.load_state_dict(saved["sched"])

    gen_state = pair.gen.get_state()
    pair.steps(10, singles=False)
    original = pair.batched
    pair.gen.set_state(gen_state)
    pair.batched, pair.opt, pair.sched = params, resumed, resumed_sched
    pair.steps(10, singles=False)
    for a, b in zip(original, params):
        assert torch.equal(a, b)
    assert not resumed.active[4] and resumed.member_lr.dtype == F64

    other = MemberOptimizer([torch.nn.Parameter(p.detach().clone()) for p in params], members[::-1])
    with pytest.raises(ValueError, match="other sweep members"):
        other.load_state_dict(saved["opt"])


def test_member_spec_from_hydra_configs():
    partial = instantiate({"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3, "betas": [0.9, 0.999]})
    spec = member_spec(partial)
    assert spec["name"] == "adamw" and spec["betas"] == (0.9, 0.999) and spec["weight_decay"] == 1e-2
    assert member_spec("torch.optim.SGD", {"lr": 0.1, "foreach": False}) == member_spec(torch.optim.SGD, {"lr": 0.1})
    assert member_spec(functools.partial(torch.optim.RMSprop, lr=0.1))["alpha"] == 0.99
    cosine = instantiate({"_target_": "torch.optim.lr_scheduler.CosineAnnealingLR", "_partial_": True, "T_max": 5})
    assert schedule_spec(cosine) == {"name": "cosine", "T_max": 5, "eta_min": 0.0}
    assert schedule_spec(None) is None


@pytest.mark.parametrize(
    ("target", "kwargs", "named"),
    [
        ("torch.optim.Adam", {"maximize": True}, "maximize"),
        ("torch.optim.SGD", {"lr": 0.1, "momentun": 0.9}, "momentun"),
        ("torch.optim.LBFGS", {}, "LBFGS"),
        ("torch.optim.Adam", {"lr": -1.0}, "learning rate"),  # torch's own validation
    ],
)
def test_unsupported_optimizer_options_are_refused(target, kwargs, named):
    with pytest.raises(ValueError, match=named):
        member_spec(target, kwargs)


def test_unsupported_scheduler_options_are_refused():
    with pytest.raises(ValueError, match="ExponentialLR"):
        schedule_spec("torch.optim.lr_scheduler.ExponentialLR", {"gamma": 0.9})
    with pytest.raises(ValueError, match="last_epoch"):
        schedule_spec("torch.optim.lr_scheduler.StepLR", {"step_size": 2, "last_epoch": 3})
    with pytest.raises(ValueError, match="step_size"):
        schedule_spec("torch.optim.lr_scheduler.StepLR", {})


def test_float32_is_close():
    param = torch.nn.Parameter(torch.randn(2, 4, generator=torch.Generator().manual_seed(0)))
    single = torch.nn.Parameter(param.detach()[1].clone())
    opt = MemberOptimizer([param], [PROJECT[0], PROJECT[5]])
    ref = torch.optim.Adam([single], lr=1e-3)
    for k in range(20):
        grad = torch.randn(2, 4, generator=torch.Generator().manual_seed(k))
        param.grad, single.grad = grad.clone(), grad[1].clone()
        opt.step()
        ref.step()
    assert (param[1] - single).abs().max().item() <= 1e-6
