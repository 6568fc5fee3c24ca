"""Plain torch networks: no training logic here, so they can be reused or exported as they are."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


class LinearNet(nn.Module):
    """x -> Wx + b: the whole of logistic and softmax regression."""

    def __init__(self, input_dim: int, output_dim: int):
        super().__init__()
        self.linear = nn.Linear(input_dim, output_dim)

    def forward(self, x):
        return self.linear(x)

    def split_input_layer(self) -> tuple[nn.Linear, nn.Module]:
        """(the Linear that reads the input, the rest): forward(x) == rest(linear(x))."""
        return self.linear, nn.Identity()


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

    def split_input_layer(self) -> tuple[nn.Linear, nn.Module]:
        """(the Linear that reads the input, the rest): forward(x) == rest(linear(x)). The rest keeps
        this network's layer names ("2.weight", ...)."""
        return self[0], nn.Sequential(OrderedDict(list(self.named_children())[1:]))
