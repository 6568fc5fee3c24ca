"""What may be built from a config that came from elsewhere: a run's `config.yaml` in MLflow.

Anyone who may edit an experiment on a shared tracking server can replace that file, and Hydra's
`instantiate` calls whatever `_target_` names (its blocklist is best effort: `pathlib.Path.write_text`
passes). So a stored config is checked, all of it (nested targets, `_args_`, `_partial_`), before
anything is built from it. What a stored config may build is what a run's model and data are made
of; a target is allowed when it is

- a target that a config of the groups a model and its data come from names (`conf/data`, `model`,
  `optimizer`, `scheduler`: lightsweep's models and data modules, scikit-learn's loaders, torch's
  optimizers and schedulers),
- a model, network or data module class defined in lightsweep (a subclass of `torch.nn.Module` or
  `LightningDataModule`: not, say, its MLflow logger, which opens a store where it is told),
- an optimizer or LR-scheduler class (a subclass of `torch.optim.Optimizer` or `LRScheduler`,
  whatever package it comes from), or
- listed in the command's `allowed_targets` (a dotted name, or `package.*`).

Deciding the middle two imports the target's module, as Hydra would (never a standard-library one).
An interpolation (`${...}`) is refused too: a stored config is resolved when it is logged, so one
can only be crafted (`${oc.decode:...}` builds nodes when it resolves).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterable, Mapping, Sequence

from omegaconf import OmegaConf

from lightsweep.errors import LightsweepError

GROUPS = ("data", "model", "optimizer", "scheduler")  # conf/'s groups a run's model and data come from
HELP = (
    "a stored config may only build lightsweep's models and data modules, the targets conf/'s "
    "data, model, optimizer and scheduler configs name, and optimizer or LR-scheduler classes"
)


class UntrustedConfig(LightsweepError):
    """A stored config names something it may not build; nothing was built."""


def check(node, source: str, key: str, allowed: Iterable[str] = ()) -> None:
    """Raise UntrustedConfig for the first `_target_` under `node` that may not be built, or the first
    interpolation; `source` and `key` say where it came from (`run <id>'s config.yaml`, `model`)."""
    allowed = tuple(str(a) for a in allowed)
    plain = OmegaConf.to_container(node, resolve=False) if OmegaConf.is_config(node) else node
    for path, name, value in _walk(plain, key):
        if isinstance(value, str) and "${" in value:
            raise UntrustedConfig(
                f"refusing {source}: {path}={value[:120]} is an interpolation, and a stored config is "
                "resolved when it is logged: it was edited after the run; retrain, or fix that file"
            )
        if name == "_target_" and not (isinstance(value, str) and is_allowed(value, allowed)):
            raise UntrustedConfig(
                f"refusing {source}: {path}={str(value)[:120]} may not be built ({HELP}); if you trust "
                f"it, pass allowed_targets=[{value}]"
            )


def instantiate(node, source: str, key: str, allowed: Iterable[str] = (), **kwargs):
    """`hydra.utils.instantiate(node)` once `check` has passed it."""
    from hydra.utils import instantiate as hydra_instantiate

    check(node, source, key, allowed)
    return hydra_instantiate(node, **kwargs)


def is_allowed(target: str, allowed: Sequence[str] = ()) -> bool:
    if target in allowed or any(a.endswith(".*") and target.startswith(a[:-1]) for a in allowed):
        return True
    if target in conf_targets():
        return True
    top = target.split(".", 1)[0]
    if top in sys.stdlib_module_names or top == "builtins":
        return False  # never imported to find out: no optimizer lives there
    obj = _locate(target)
    if not isinstance(obj, type):
        return False
    import pytorch_lightning as pl
    import torch

    if top == "lightsweep" and obj.__module__.split(".", 1)[0] == "lightsweep":  # not one it only imports
        return issubclass(obj, (torch.nn.Module, pl.LightningDataModule))
    return issubclass(obj, (torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler))


def composed_targets(config) -> list[str]:
    """The targets of GROUPS in a config the user composed (a sweep's own): theirs, so allowed."""
    return [t for group in GROUPS for t in targets_in(config.get(group))]


def targets_in(node) -> list[str]:
    """Every `_target_` string under `node` (a config the user composed: its own targets)."""
    plain = OmegaConf.to_container(node, resolve=False) if OmegaConf.is_config(node) else node
    return [value for _, name, value in _walk(plain, "") if name == "_target_" and isinstance(value, str)]


@functools.cache
def conf_targets() -> frozenset[str]:
    """The `_target_`s of the configs in `conf/<group>/` for each of GROUPS."""
    from lightsweep.config import project_root

    found = set()
    for group in GROUPS:
        for path in sorted((project_root() / "conf" / group).rglob("*.yaml")):
            found.update(targets_in(OmegaConf.load(path)))
    return frozenset(found)


def _locate(target: str):
    """The object `target` names, found as Hydra finds a `_target_` (an attribute first, else a
    submodule); None if there is none."""
    import importlib

    parts = target.split(".")
    try:
        obj = importlib.import_module(parts[0])
        for i, part in enumerate(parts[1:], start=2):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                obj = importlib.import_module(".".join(parts[:i]))
    except Exception:  # not importable, or not there: nothing that may be built
        return None
    return obj


def _walk(value, path: str, name=None):
    """(dotted path, its last key or None, value) of every node under `value`, containers included."""
    yield path, name, value
    if isinstance(value, Mapping):
        for key, item in sorted(value.items(), key=lambda kv: kv[0] != "_target_"):  # a node's own target first
            yield from _walk(item, f"{path}.{key}" if path else str(key), key)
    elif isinstance(value, Sequence) and not isinstance(value, str):
        for i, item in enumerate(value):
            yield from _walk(item, f"{path}[{i}]")
