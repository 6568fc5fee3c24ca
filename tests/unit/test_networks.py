"""The networks' input-layer split: the vectorized module runs the first Linear of the members that share
a batch as one wide matmul and the rest per member, so rest(linear(x)) must be the network itself."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightsweep.models.networks import MLP, LinearNet


@pytest.mark.parametrize(
    "net",
    [LinearNet(12, 3), MLP(12, [8, 5], 3, activation="tanh", dropout=0.2)],
    ids=["linear", "mlp"],
)
def test_rest_of_the_input_layer_is_the_network(net):
    torch.manual_seed(0)
    net.eval()  # dropout off: both paths must compute the same function
    first, rest = net.split_input_layer()
    assert isinstance(first, nn.Linear) and first.weight is next(net.parameters())
    x = torch.randn(7, 12)
    assert torch.equal(rest(first(x)), net(x))
    # The rest keeps the network's parameter names, so the stacked weights can be handed to it by name.
    names = dict(net.named_parameters())
    for name, p in rest.named_parameters():
        assert names[name] is p
    assert len(list(rest.parameters())) + 2 == len(names)
