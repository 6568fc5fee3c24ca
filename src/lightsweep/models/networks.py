"""Plain torch networks: no training logic here, so they can be reused or exported as they are."""

from __future__ import annotations

from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


class LinearNet(nn.Module):
    """x -> Wx + b: the whole of logistic and softmax regression."""

    def __init__(self, input_dim: int, output_dim: int):
        super().__init__()
        self.linear = nn.Linear(input_dim, output_dim)

    def forward(self, x):
        return self.linear(x)


class MLP(nn.Sequential):
    """Linear -> activation -> dropout, per hidden size, then a linear output layer."""

    def __init__(self, input_dim: int, hidden_sizes, output_dim: int, activation="relu", dropout=0.0):
        layers: list[nn.Module] = []
        width = input_dim
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, output_dim))
        super().__init__(*layers)
