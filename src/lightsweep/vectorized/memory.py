"""What a vectorized group's tensors take, said when a group is submitted as one SLURM task.

From one member built as its job builds it (`lightsweep.build.build_model`): the stacked weights and
their gradients (members x parameters), each member's optimizer state (its optimizer stepped once on
a copy of the model: what torch allocates, per optimizer config of the group), the activations of
one training batch for every member (the outputs of each linear layer, kept for the backward pass,
and their gradients), and the data set, held in memory once for the group. The process itself (Python,
torch, Lightning) comes on top.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf


@dataclass
class MemoryEstimate:
    members: int
    weights: int  # bytes: weights and their gradients
    optimizer: int
    activations: int
    data: int | None  # None: the data could not be loaded here (it may live where the tasks run only)

    @property
    def total(self) -> int:
        return self.weights + self.optimizer + self.activations + (self.data or 0)

    def describe(self) -> str:
        data = size(self.data) if self.data is not None else "not loadable here"
        return (
            f"{size(self.total)} of tensors (weights and gradients {size(self.weights)}, optimizer state "
            f"{size(self.optimizer)}, activations {size(self.activations)}, data {data})"
        )


def size(n: int) -> str:
    """Bytes in words: `12.3 MiB`."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def estimate(configs: list[DictConfig]) -> MemoryEstimate:
    """The estimate for a group of the jobs composed as `configs` (a sweep's job configs)."""
    from lightsweep.build import build_model

    tasks = [OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]) for cfg in configs]
    datamodule, model = build_model(tasks[0])
    dtype = torch.float64 if str(tasks[0].trainer.get("precision", "32")).startswith("64") else torch.float32
    itemsize = torch.empty((), dtype=dtype).element_size()
    parameters = sum(p.numel() for p in model.parameters())
    members = len(configs)
    per_optimizer: dict[str, int] = {}
    optimizer_bytes = 0
    for task in tasks:
        key = OmegaConf.to_yaml(task.optimizer)
        if key not in per_optimizer:
            per_optimizer[key] = optimizer_state_bytes(task) * itemsize // 4
        optimizer_bytes += per_optimizer[key]
    widths = sum(m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))
    batch = int(tasks[0].data.get("batch_size") or 1)
    try:
        datamodule.setup("fit")
        data = sum(t.nbytes for pair in datamodule.tensors.values() for t in pair)
    except Exception:  # (the data set may exist only where the tasks run)
        data = None
    return MemoryEstimate(
        members=members,
        weights=2 * members * parameters * itemsize,
        optimizer=optimizer_bytes,
        activations=2 * members * batch * widths * itemsize,
        data=data,
    )


def optimizer_state_bytes(task: DictConfig) -> int:
    """The bytes of one member's optimizer state (float32 weights): its optimizer stepped once, with zero
    gradients, on a fresh copy of its model."""
    from lightsweep.build import build_model

    _, model = build_model(task)
    configured = model.configure_optimizers()
    optimizer = configured["optimizer"] if isinstance(configured, dict) else configured
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    return sum(
        value.nbytes
        for state in optimizer.state.values()
        for value in state.values()
        if isinstance(value, torch.Tensor)
    )
