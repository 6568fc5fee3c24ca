"""Parameter groups by a rule in the optimizer's config (lightsweep.models.param_groups)."""

from __future__ import annotations

import pytest
import torch

from lightsweep.errors import LightsweepError
from lightsweep.models.networks import MLP, LinearNet
from lightsweep.models.param_groups import parameter_groups


def names(module, group) -> list[str]:
    by_id = {id(p): name for name, p in module.named_parameters()}
    return [by_id[id(p)] for p in group["params"]]


def test_weight_matrices_and_the_rest_with_their_own_options():
    mlp = MLP(6, [5, 4], 3)  # 0: Linear(6, 5), 2: Linear(5, 4), 4: Linear(4, 3)
    groups = parameter_groups(mlp, [{"select": {"ndim": 2}, "use_muon": True, "lr": 0.02}, {"use_muon": False}])
    assert [names(mlp, g) for g in groups] == [["0.weight", "2.weight", "4.weight"], ["0.bias", "2.bias", "4.bias"]]
    assert [{k: v for k, v in g.items() if k != "params"} for g in groups] == [
        {"use_muon": True, "lr": 0.02},
        {"use_muon": False},
    ]


def test_roles_input_hidden_output_by_the_order_of_the_weights():
    mlp = MLP(6, [5, 4], 3)
    hidden = parameter_groups(mlp, [{"select": {"role": "hidden"}, "use_muon": True}, {"use_muon": False}])
    assert names(mlp, hidden[0]) == ["2.weight"]
    ends = parameter_groups(mlp, [{"select": {"role": ["input", "output"]}}])
    assert names(mlp, ends[0]) == ["0.weight", "4.weight"]
    assert names(mlp, ends[1]) == ["0.bias", "2.weight", "2.bias", "4.bias"]
    # A one-layer model's weight reads the input and gives the output: it has no hidden weight, and the
    # group that selects hidden weights is left out.
    linear = LinearNet(6, 3)
    groups = parameter_groups(linear, [{"select": {"role": "hidden"}, "use_muon": True}, {"use_muon": False}])
    assert [names(linear, g) for g in groups] == [["linear.weight", "linear.bias"]]
    assert groups[0]["use_muon"] is False
    both = parameter_groups(linear, [{"select": {"role": "input"}}, {"select": {"role": "output"}}])
    assert names(linear, both[0]) == ["linear.weight"]


def test_name_globs_and_a_last_group_for_what_no_rule_selects():
    mlp = MLP(6, [5], 3)
    groups = parameter_groups(mlp, [{"select": {"name": ["0.*"]}, "lr": 0.1}, {"select": {"name": "*.bias"}}])
    assert [names(mlp, g) for g in groups] == [["0.weight", "0.bias"], ["2.bias"], ["2.weight"]]
    assert groups[2] == {"params": groups[2]["params"]}  # the optimizer's own defaults


def test_every_selector_must_hold():
    mlp = MLP(6, [5], 3)
    groups = parameter_groups(mlp, [{"select": {"ndim": 2, "name": "2.*"}, "lr": 0.1}])
    assert names(mlp, groups[0]) == ["2.weight"]


def test_the_groups_build_an_optimizer():
    from pytorch_optimizer import Muon

    mlp = MLP(6, [5, 4], 3)
    optimizer = Muon(parameter_groups(mlp, [{"select": {"ndim": 2}, "use_muon": True}, {"use_muon": False}]))
    mlp(torch.randn(8, 6)).sum().backward()
    optimizer.step()
    assert [g["use_muon"] for g in optimizer.param_groups] == [True, False]


@pytest.mark.parametrize(
    "rules, message",
    [
        ({"select": {"ndim": 2}}, "optimizer.param_groups must be a list"),
        ([["ndim"]], "optimizer.param_groups[0] must be a mapping"),
        ([{"select": {"rank": 2}}], "optimizer.param_groups[0].select.rank is not a selector: use ndim, name, role"),
        ([{}, {"select": {"ndim": "two"}}], "optimizer.param_groups[1].select.ndim must be a whole number"),
        ([{"select": {"role": "middle"}}], "optimizer.param_groups[0].select.role must be one of input, hidden"),
        ([{"params": ["net.0.weight"]}], "optimizer.param_groups[0].params: the rule picks the parameters"),
    ],
)
def test_bad_rules_are_refused_in_one_line_that_names_the_entry(rules, message):
    with pytest.raises(LightsweepError) as err:
        parameter_groups(MLP(6, [5], 3), rules)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
