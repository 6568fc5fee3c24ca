"""What a run's MLflow model takes and returns, and the plain torch module that is exported.

The model takes the samples as the data set stores them (Fashion-MNIST: uint8 (N, 28, 28); a data
module's `raw_format()`) and returns class probabilities (N, K), or the positive class's probability
(N,) for a binary (one-logit) model: the normalisation with the training split's statistics is inside
it. `InputSpec` is what it needs besides the network; a run's checkpoints keep it (the RunArtifacts
callback's state), so that a model can be logged from a checkpoint after the run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EXAMPLE_ROWS = 4  # the input example: >= 2 rows, so the exported batch size stays free
SPEC_STATE = "RunArtifacts"  # the callback whose checkpoint state holds the input spec


@dataclass
class InputSpec:
    """What a logged model needs besides the network: the raw sample format and the normalisation."""

    dtype: str
    shape: tuple[int, ...]
    scale: float | None
    mean: object  # a float (one for all pixels), or a tensor with one value per feature
    std: object
    class_names: list[str]
    binary: bool
    example: np.ndarray  # EXAMPLE_ROWS raw samples

    @classmethod
    def from_training(cls, datamodule, pl_module) -> InputSpec:
        from lightsweep.tracking.datasets import to_raw

        fmt = datamodule.raw_format()
        x = datamodule.tensors["val"][0][:EXAMPLE_ROWS]
        return cls(
            fmt.dtype,
            tuple(fmt.shape),
            fmt.scale,
            _statistic(datamodule.mean),
            _statistic(datamodule.std),
            list(datamodule.class_names),
            is_binary(pl_module),
            to_raw(datamodule, x),
        )

    def state(self) -> dict:
        """For a checkpoint: only what `torch.load(weights_only=True)` reads back."""
        import torch

        return {
            "dtype": self.dtype,
            "shape": list(self.shape),
            "scale": self.scale,
            "mean": self.mean,
            "std": self.std,
            "class_names": list(self.class_names),
            "binary": self.binary,
            "example": torch.from_numpy(np.ascontiguousarray(self.example)),
        }

    @classmethod
    def from_state(cls, state: dict) -> InputSpec:
        return cls(
            state["dtype"],
            tuple(state["shape"]),
            state["scale"],
            state["mean"],
            state["std"],
            list(state["class_names"]),
            bool(state["binary"]),
            state["example"].numpy(),
        )

    @property
    def outputs(self) -> tuple[int, ...]:
        return (-1,) if self.binary else (-1, len(self.class_names))

    def signature(self):
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        return ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(self.dtype), (-1, *self.shape))]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), self.outputs)]),
        )


def _statistic(value):
    if hasattr(value, "detach"):
        import torch

        return value.detach().to("cpu", torch.float32).clone()
    return float(value)


def is_binary(pl_module) -> bool:
    """A one-logit model (logistic regression): it outputs the positive class's probability."""
    return bool(getattr(pl_module, "binary", False))


def serving_module(net, spec: InputSpec):
    """The plain torch module that is exported: raw samples -> normalisation -> net -> probabilities."""
    import torch
    from torch import nn

    class LightsweepClassifier(nn.Module):
        """Raw samples (N, ...) -> class probabilities (N, K), or (N,) for a binary model."""

        def __init__(self):
            super().__init__()
            self.net = net
            for name in ("mean", "std"):
                value = getattr(spec, name)
                if isinstance(value, torch.Tensor):
                    self.register_buffer(name, value.detach().to("cpu", torch.float32).clone())
                else:
                    setattr(self, name, float(value))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # The DataModule's operations, in its order: the network sees bit-identical inputs.
            x = x.reshape(x.shape[0], -1).to(torch.float32)
            if spec.scale:
                x = x / spec.scale
            logits = self.net((x - self.mean) / self.std)
            if spec.binary:
                return torch.sigmoid(logits.reshape(-1))
            return torch.softmax(logits, dim=1)

    return LightsweepClassifier().eval()
