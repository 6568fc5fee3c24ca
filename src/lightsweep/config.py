"""Config helpers: the project root, task resolution and validation (resolvers: lightsweep.resolvers).

Validation runs before anything heavy is built so that a bad value costs one clear line, not a
traceback from deep inside torch or Lightning. It is one table (RULES) read by one function rather
than Hydra structured configs: their errors surface while Hydra composes (exit 1; in a multirun,
inside the launcher, which aborts the whole sweep) and __post_init__ runs only on to_object, not on
merge, whereas a LightsweepError raised from train() is one line, exit 2, a FAILED run, and in a
sweep one failed job while the sweep goes on.
"""

from __future__ import annotations

import math
import operator
import os
from dataclasses import dataclass, replace
from numbers import Real
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from lightsweep.errors import LightsweepError


def project_root() -> Path:
    """The repository root (holds `conf/`); LIGHTSWEEP_ROOT overrides, else the cwd."""
    if env := os.environ.get("LIGHTSWEEP_ROOT"):
        return Path(env).resolve()
    source_tree = Path(__file__).resolve().parents[2]  # src/lightsweep/config.py -> repo
    if (source_tree / "conf" / "config.yaml").is_file():
        return source_tree
    return Path.cwd()


def count_classes(class_names, classes, positive_class) -> int:
    if positive_class is not None:
        return 2
    return len(classes) if classes is not None else len(class_names)


def choose_binary_task(cfg: DictConfig) -> None:
    """A binary model on a multi-class dataset trains the dataset's `binary_task` unless told otherwise."""
    data = cfg.data
    if not cfg.model.get("binary", False):
        return
    if data.classes is None and data.positive_class is None and len(data.class_names) != 2:
        if data.get("binary_task") is None:
            raise LightsweepError(
                f"model={cfg.model._target_.rsplit('.', 1)[-1]} is binary but the dataset has "
                f"{len(data.class_names)} classes: set data.classes=[a,b] or data.positive_class=NAME"
            )
        with open_dict(cfg):
            data.classes = data.binary_task
    if data.num_classes != 2:
        raise LightsweepError(
            f"the binary model needs 2 classes but data.classes={_plain(data.classes)} has "
            f"{data.num_classes}: pass two classes, e.g. data.classes=[{_plain(data.class_names[0])},"
            f"{_plain(data.class_names[-1])}], or data.positive_class=NAME"
        )


def _plain(value):
    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value


@dataclass(frozen=True)
class Rule:
    """What one key must hold: a "number", a "whole" number, a "size" (a whole count, or a fraction
    below 1), "sizes" (a non-empty list of whole numbers) or a "word" from `words`; bounds: > gt,
    >= ge, < lt."""

    kind: str = "number"
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    words: tuple[str, ...] = ()
    fix: str = ""  # the hint for a wrong type; by default "pass a number, e.g. <key>=..."


# Every key checked before a run starts, whichever option of its group holds it (a key is checked
# only where present, so a new model or optimizer needs at most a line here). Values torch checks
# itself when the optimizer is built (betas, eps, alpha, ...) and scikit-learn's loader arguments
# (data.loader.*) are left to them: build.py and the DataModule turn their errors into one line.
RULES: dict[str, Rule] = {
    "seed": Rule("whole", ge=0),
    "data.val_size": Rule("size", gt=0),
    "data.test_size": Rule(gt=0, lt=1),
    "data.split_seed": Rule("whole", ge=0),
    "data.batch_size": Rule("whole", gt=0),
    "data.eval_batch_size": Rule("whole", gt=0),
    "data.standardize": Rule("word", words=("global", "feature")),
    "model.hidden_sizes": Rule(
        "sizes", gt=0, fix="e.g. model.hidden_sizes=[256,128], or use model=softmax for no hidden layer"
    ),
    "model.dropout": Rule(ge=0, lt=1),
    "model.activation": Rule("word", words=("relu", "sigmoid", "tanh")),
    "model.loss": Rule("word", words=("ce", "mse")),
    "model.label_smoothing": Rule(ge=0, lt=1),
    "optimizer.lr": Rule(gt=0),
    "optimizer.weight_decay": Rule(ge=0),
    "optimizer.momentum": Rule(ge=0),
    "scheduler.step_size": Rule("whole", gt=0),  # StepLR takes 0, then divides by it after the first epoch
    "scheduler.T_max": Rule("whole", gt=0),
    "trainer.max_epochs": Rule("whole", gt=0),
    "trainer.log_every_n_steps": Rule("whole", gt=0),
    "flush_denormal": Rule("word", words=(True, False)),
    "plots": Rule("word", words=(True, False)),
}
BOUNDS = (("gt", ">", operator.gt), ("ge", ">=", operator.ge), ("lt", "<", operator.lt))
ABSENT = object()


def check(key: str, value, rule: Rule) -> None:
    """Raise the one-line LightsweepError for `key` unless `value` follows `rule`."""
    if rule.kind == "word":
        if value not in rule.words:
            allowed = ", ".join(map(str, rule.words[:-1])) + f" or {rule.words[-1]}"
            raise LightsweepError(f"{key} must be {allowed}, got {value!r}")
        return
    if rule.kind == "sizes":
        if not isinstance(value, ListConfig) or len(value) == 0:
            raise LightsweepError(f"{key} must be a non-empty list, got {_plain(value)!r}: {rule.fix}")
        for item in value:
            check(f"{key}[]", item, replace(rule, kind="whole", fix=""))
        return
    fraction = rule.kind == "size" and isinstance(value, float)  # data.val_size=0.1 vs =5000
    whole = rule.kind == "whole" or (rule.kind == "size" and not fraction)
    fix = rule.fix or f"pass a number, e.g. {key}=" + ("1" if whole else "0.01")
    if isinstance(value, bool) or not isinstance(value, Real):
        raise LightsweepError(f"{key} must be a number, got {value!r}: {fix}")
    if not math.isfinite(value):
        raise LightsweepError(f"{key} must be finite, got {value!r}: {fix}")
    if whole and int(value) != value:
        raise LightsweepError(f"{key} must be a whole number, got {value!r}: {fix}")
    for name, symbol, holds in BOUNDS:
        bound = 1 if name == "lt" and fraction else getattr(rule, name)
        if bound is not None and not holds(value, bound):
            raise LightsweepError(f"{key} must be {symbol} {bound}, got {value!r}: {fix}")


def _class_ref(data: DictConfig, ref) -> None:
    names = list(data.class_names)
    if isinstance(ref, int) and not isinstance(ref, bool):
        ok = 0 <= ref < len(names)
    else:
        ok = str(ref) in names
    if not ok:
        raise LightsweepError(
            f"unknown class {ref!r} in data config: use a name from data.class_names {names} "
            f"or an index 0..{len(names) - 1}"
        )


def check_classes(data: DictConfig) -> None:
    """data.classes / data.positive_class name classes of data.class_names, without repeats."""
    if data.classes is not None:
        if len(data.classes) < 2:
            raise LightsweepError(
                f"data.classes needs at least 2 classes, got {_plain(data.classes)}: "
                "list two or more, or data.classes=null for all"
            )
        for ref in data.classes:
            _class_ref(data, ref)
        if len({str(c) for c in data.classes}) != len(data.classes):
            raise LightsweepError(f"data.classes has duplicates: {_plain(data.classes)}")
    if data.positive_class is not None:
        _class_ref(data, data.positive_class)


def check_monitors(cfg: DictConfig) -> None:
    """A callback that keeps the best epoch maximises an accuracy and minimises a loss (the small sets
    monitor val/loss by default: an override of the monitor alone would keep the other's mode)."""
    for name, callback in (cfg.get("callbacks") or {}).items():
        monitor, mode = (callback or {}).get("monitor"), (callback or {}).get("mode")
        wanted = "max" if str(monitor).endswith("acc") else "min" if "loss" in str(monitor) else mode
        if monitor and mode != wanted:
            raise LightsweepError(
                f"callbacks.{name}.monitor={monitor} with mode={mode} takes the worst epoch for the best: pass "
                f"callbacks.{name}.mode={wanted} too"
            )


def validate(cfg: DictConfig) -> None:
    """Check the composed config; raise LightsweepError with the fix on the first problem."""
    for key, rule in RULES.items():
        value = OmegaConf.select(cfg, key, default=ABSENT)
        if value is not ABSENT:
            check(key, value, rule)
    check_classes(cfg.data)
    check_monitors(cfg)
    opt = cfg.optimizer
    if opt.get("nesterov") and opt.get("momentum", 0) <= 0:
        raise LightsweepError("optimizer.nesterov=true needs optimizer.momentum > 0: use optimizer=nesterov")
