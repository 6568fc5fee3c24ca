"""LR schedules that torch composes from other schedulers (SequentialLR), for configs.

Each factory takes the optimizer first, as Hydra's partial of it is completed by the module's
`configure_optimizers`; the schedulers inside are torch's own.
"""

from __future__ import annotations

from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR


def sequential(optimizer, schedulers, milestones) -> SequentialLR:
    """torch's SequentialLR over `schedulers` (partials, each completed with the optimizer here),
    switching from one to the next at `milestones` (scheduler steps)."""
    return SequentialLR(optimizer, [make(optimizer=optimizer) for make in schedulers], milestones=list(milestones))


def warmup_cosine(
    optimizer, warmup: int | float, total_steps: int, start_factor: float = 0.1, eta_min: float = 0.0
) -> SequentialLR:
    """Linear warmup from `start_factor` x lr over `warmup` scheduler steps, then cosine decay to
    `eta_min` over the rest of `total_steps` (both in the scheduler's interval: epochs or batches).
    A `warmup` below 1 (a float) is a fraction of `total_steps` (AlgoPerf's `warmup_factor`)."""
    if isinstance(warmup, float) and 0 <= warmup < 1:
        warmup = int(warmup * total_steps)
    if not 0 <= warmup < total_steps:
        raise ValueError(f"warmup={warmup} must be at least 0 and below total_steps={total_steps}")
    return SequentialLR(
        optimizer,
        [
            LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=max(warmup, 1)),
            CosineAnnealingLR(optimizer, T_max=total_steps - warmup, eta_min=eta_min),
        ],
        milestones=[warmup],
    )
