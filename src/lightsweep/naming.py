"""Run names that say what a job changes: `mlp-adam-lr0.001-s2`."""

from __future__ import annotations

from lightsweep.overrides import override_key

SHORT = {"lr": "lr", "weight_decay": "wd", "hidden_sizes": "h", "max_epochs": "ep", "batch_size": "bs", "momentum": "m"}
# Overrides already in the name, or that do not change what is trained.
NOT_IN_NAME = {"model", "optimizer", "seed", "experiment", "hparams_search", "debug", "logger", "trainer"}
NOT_IN_NAME_PREFIXES = ("hydra.", "paths.", "callbacks.", "logger.", "trainer.enable_", "experiment_name", "tags.")


def _fmt(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return value.replace("/", "_").replace(" ", "")
    return str(int(number)) if value.strip().lstrip("-").isdigit() else f"{number:.3g}"


def describe_override(override: str) -> str | None:
    key, value = override_key(override), override.partition("=")[2]
    if key in NOT_IN_NAME or key.startswith(NOT_IN_NAME_PREFIXES) or "/" in key:
        return None
    leaf = key.rsplit(".", 1)[-1]
    if leaf in SHORT:
        return f"{SHORT[leaf]}{_fmt(value)}"
    return f"{leaf}={_fmt(value)}"


def run_name(model: str, optimizer: str, seed: int, lr: float | None = None, overrides=()) -> str:
    """`{model}-{optimizer}[-lr..][-other changes]-s{seed}`; lr is named in sweeps (it always matters there)."""
    parts = [model, optimizer]
    described = [d for d in (describe_override(o) for o in overrides) if d]
    if lr is not None and not any(d.startswith("lr") for d in described):
        described.insert(0, f"lr{_fmt(str(lr))}")
    return "-".join([*parts, *described, f"s{seed}"])


def config_label(name: str) -> str:
    """The configuration a run belongs to: its name without the seed."""
    head, sep, tail = name.rpartition("-s")
    return head if sep and tail.isdigit() else name
