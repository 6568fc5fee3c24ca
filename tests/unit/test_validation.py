"""The validation table (lightsweep.config.RULES) and the one function that reads it: no Hydra, no training."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lightsweep.config import RULES, Rule, check, validate
from lightsweep.errors import LightsweepError

CONF = Path(__file__).resolve().parents[2] / "conf"


def test_every_group_has_rules():
    assert {key.split(".")[0] for key in RULES} >= {"seed", "data", "model", "optimizer", "scheduler", "trainer"}


@pytest.mark.parametrize("key", RULES)
def test_every_rule_names_a_key_some_config_holds(key):
    """A rule for a key no YAML has is dead (a renamed key would go unchecked)."""
    group, _, leaf = key.rpartition(".")
    files = [CONF / "config.yaml"] if not group else list((CONF / group).glob("*.yaml"))
    assert any(re.search(rf"^\s*{re.escape(leaf)}:", f.read_text(), re.M) for f in files), key


@pytest.mark.parametrize(
    "rule, value, message",
    [
        (Rule(gt=0), -1, "k must be > 0, got -1: pass a number, e.g. k=0.01"),
        (Rule(gt=0), "abc", "k must be a number, got 'abc'"),
        (Rule(gt=0), True, "k must be a number, got True"),
        (Rule(gt=0), None, "k must be a number, got None"),
        (Rule(gt=0), math.nan, "k must be finite"),
        (Rule(ge=0, lt=1), 1.0, "k must be < 1, got 1.0"),
        (Rule("whole", gt=0), 2.5, "k must be a whole number, got 2.5: pass a number, e.g. k=1"),
        (Rule("whole", gt=0), math.inf, "k must be finite"),  # not int(inf)'s OverflowError
        (Rule("size", gt=0), 1.5, "k must be < 1, got 1.5"),  # a float is a fraction
        (Rule("size", gt=0), 0, "k must be > 0"),
        (Rule("size", gt=0), 0.0, "k must be > 0"),
        (Rule("sizes", gt=0, fix="e.g. k=[8]"), OmegaConf.create([]), "k must be a non-empty list, got []: e.g. k=[8]"),
        (Rule("sizes", gt=0), 8, "k must be a non-empty list, got 8"),
        (Rule("sizes", gt=0), OmegaConf.create([8, 0]), r"k\[\] must be > 0, got 0"),
        (Rule("sizes", gt=0), OmegaConf.create([8, 1.5]), r"k\[\] must be a whole number"),
        (Rule("word", words=("relu", "sigmoid", "tanh")), "gelu", "k must be relu, sigmoid or tanh, got 'gelu'"),
        (Rule("word", words=("ce", "mse")), "hinge", "k must be ce or mse, got 'hinge'"),
        (Rule("word", words=(True, False)), "yes", "k must be True or False, got 'yes'"),
    ],
)
def test_a_bad_value_is_one_line_naming_key_and_fix(rule, value, message):
    with pytest.raises(LightsweepError, match=message) as info:
        check("k", value, rule)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "rule, value",
    [
        (Rule(gt=0), 1e-4),
        (Rule(ge=0), 0),
        (Rule(ge=0, lt=1), 0.5),
        (Rule("whole", gt=0), 3),
        (Rule("whole", gt=0), 3.0),
        (Rule("size", gt=0), 5000),
        (Rule("size", gt=0), 0.1),
        (Rule("sizes", gt=0), OmegaConf.create([256, 128])),
        (Rule("word", words=("ce", "mse")), "mse"),
    ],
)
def test_a_good_value_passes(rule, value):
    check("k", value, rule)


def config(**optimizer):
    return OmegaConf.create(
        {
            "seed": 0,
            "trainer": {"max_epochs": 1},
            "data": {"class_names": ["a", "b"], "classes": None, "positive_class": None, "val_size": 0.1},
            "model": {"_target_": "M"},
            "optimizer": {"_target_": "torch.optim.NewOptimizer", **optimizer},
        }
    )


def test_a_new_optimizer_needs_no_line_of_its_own():
    """Its keys are checked by name wherever they appear; the keys the table lacks are left alone."""
    validate(config(lr=0.1, rho=0.9))  # no scheduler, no batch size: absent keys are not required
    with pytest.raises(LightsweepError, match="optimizer.momentum must be >= 0"):
        validate(config(lr=0.1, momentum=-1))
    with pytest.raises(LightsweepError, match="optimizer.lr must be > 0"):
        validate(config(lr=0))


def test_nesterov_needs_momentum():
    with pytest.raises(LightsweepError, match="optimizer.nesterov=true needs optimizer.momentum > 0"):
        validate(config(lr=0.1, nesterov=True, momentum=0.0))
    validate(config(lr=0.1, nesterov=True, momentum=0.9))
