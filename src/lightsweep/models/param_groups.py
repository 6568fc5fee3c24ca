"""Parameter groups from a rule in the optimizer's config (`optimizer.param_groups`), for any optimizer.

A rule is a list of groups; each parameter joins the first group whose `select` it matches, and the
group's other keys are that group's options for the optimizer (torch's param-group dicts):

    param_groups:                  # conf/optimizer/muon.yaml
      - select: {ndim: 2}          # weight matrices: Muon's orthogonalized update
        use_muon: true
      - use_muon: false            # no select: everything else (biases), AdamW inside Muon

`select` keys, all of which must hold: `ndim` (a number or a list), `name` (a glob of the module's
parameter names, e.g. `net.0.*`, or a list of them), `role` (`input`, `hidden` or `output`, or a
list: among the parameters with two or more dimensions, in the order the module registers them, the
first is the input layer's, the last the output layer's, the others hidden; a one-layer model's one
weight is both input and output). Parameters that match no group form a last group with the
optimizer's own defaults; groups that match nothing are left out (a model without hidden layers has
no Muon group).
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from torch import nn

from lightsweep.errors import LightsweepError

SELECTORS = ("ndim", "name", "role")
ROLES = ("input", "hidden", "output")
KEY = "optimizer.param_groups"


def check_rules(rules) -> list[dict]:
    """The rules as plain dicts, or a one-line LightsweepError naming the entry and the fix."""
    if not isinstance(rules, list) or not rules:
        raise LightsweepError(f"{KEY} must be a list of groups, each with its options and a `select`, got {rules!r}")
    checked = []
    for index, rule in enumerate(rules):
        where = f"{KEY}[{index}]"
        if not isinstance(rule, dict):
            raise LightsweepError(f"{where} must be a mapping (a `select` and the group's options), got {rule!r}")
        if "params" in rule:
            raise LightsweepError(f"{where}.params: the rule picks the parameters; select them with `select`")
        select = rule.get("select") or {}
        if not isinstance(select, dict):
            raise LightsweepError(f"{where}.select must be a mapping of {', '.join(SELECTORS)}, got {select!r}")
        for key, value in select.items():
            if key not in SELECTORS:
                raise LightsweepError(f"{where}.select.{key} is not a selector: use {', '.join(SELECTORS)}")
            values = value if isinstance(value, list) else [value]
            if key == "ndim" and not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                raise LightsweepError(f"{where}.select.ndim must be a whole number or a list of them, got {value!r}")
            if key == "role" and not set(values) <= set(ROLES):
                raise LightsweepError(f"{where}.select.role must be one of {', '.join(ROLES)}, got {value!r}")
            if key == "name" and not all(isinstance(v, str) for v in values):
                raise LightsweepError(f"{where}.select.name must be a glob or a list of globs, got {value!r}")
        checked.append({**rule, "select": {k: v if isinstance(v, list) else [v] for k, v in select.items()}})
    return checked


def roles(module: nn.Module) -> dict[str, set[str]]:
    """Each parameter's roles by name (input, hidden, output) for those of two or more dimensions."""
    weights = [name for name, p in module.named_parameters() if p.ndim >= 2]
    found = {name: {"hidden"} for name in weights[1:-1]}
    if weights:
        found[weights[0]] = {"input"}
        found[weights[-1]] = found.get(weights[-1], set()) | {"output"}  # (one layer: input and output)
    return found


def matches(select: dict, name: str, parameter: nn.Parameter, roles_of: set[str]) -> bool:
    return (
        ("ndim" not in select or parameter.ndim in select["ndim"])
        and ("name" not in select or any(fnmatchcase(name, glob) for glob in select["name"]))
        and ("role" not in select or bool(roles_of & set(select["role"])))
    )


def parameter_groups(module: nn.Module, rules: list[dict]) -> list[dict]:
    """torch's param-group dicts for `module` by `rules` (checked by `check_rules`), in the rules' order."""
    rules = check_rules(rules)
    role_of = roles(module)
    groups = [([], {k: v for k, v in rule.items() if k != "select"}) for rule in rules]
    rest: list[nn.Parameter] = []
    for name, parameter in module.named_parameters():
        for rule, (params, _) in zip(rules, groups):
            if matches(rule["select"], name, parameter, role_of.get(name, set())):
                params.append(parameter)
                break
        else:
            rest.append(parameter)
    built = [{"params": params, **options} for params, options in groups if params]
    return built + ([{"params": rest}] if rest else [])
