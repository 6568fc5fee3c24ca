"""Config helpers: the project root, task resolution and validation (resolvers: lightsweep.resolvers).

Validation runs before anything heavy is built so that a bad value costs one clear line, not a
traceback from deep inside torch or Lightning.
"""

from __future__ import annotations

import math
import os
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


def _number(path: str, value, *, positive=False, non_negative=False, integer=False, below=None):
    fix = f"pass a number, e.g. {path}=" + ("1" if integer else "0.01")
    if isinstance(value, bool) or not isinstance(value, Real):
        raise LightsweepError(f"{path} must be a number, got {value!r}: {fix}")
    if integer and int(value) != value:
        raise LightsweepError(f"{path} must be a whole number, got {value!r}: {fix}")
    if not math.isfinite(value):
        raise LightsweepError(f"{path} must be finite, got {value!r}: {fix}")
    if positive and value <= 0:
        raise LightsweepError(f"{path} must be > 0, got {value!r}: {fix}")
    if non_negative and value < 0:
        raise LightsweepError(f"{path} must be >= 0, got {value!r}: {fix}")
    if below is not None and value >= below:
        raise LightsweepError(f"{path} must be < {below}, got {value!r}: {fix}")


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


def validate(cfg: DictConfig) -> None:
    """Check the composed config; raise LightsweepError with the fix on the first problem."""
    _number("seed", cfg.seed, non_negative=True, integer=True)

    data = cfg.data
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
    val = data.val_size
    if isinstance(val, float):
        _number("data.val_size", val, positive=True, below=1)
    else:
        _number("data.val_size", val, positive=True, integer=True)
    if "test_size" in data:
        _number("data.test_size", data.test_size, positive=True, below=1)
    _number("data.batch_size", data.batch_size, positive=True, integer=True)
    _number("data.eval_batch_size", data.eval_batch_size, positive=True, integer=True)

    model = cfg.model
    if "hidden_sizes" in model:
        sizes = model.hidden_sizes
        if not isinstance(sizes, ListConfig) or len(sizes) == 0:
            raise LightsweepError(
                f"model.hidden_sizes must be a non-empty list, got {_plain(sizes)!r}: "
                "e.g. model.hidden_sizes=[256,128], or use model=softmax for no hidden layer"
            )
        for size in sizes:
            _number("model.hidden_sizes[]", size, positive=True, integer=True)
    if "dropout" in model:
        _number("model.dropout", model.dropout, non_negative=True, below=1)
    if "activation" in model and model.activation not in ("relu", "sigmoid", "tanh"):
        raise LightsweepError(
            f"model.activation must be relu, sigmoid or tanh, got {model.activation!r}"
        )
    if "loss" in model and model.loss not in ("ce", "mse"):
        raise LightsweepError(f"model.loss must be ce or mse, got {model.loss!r}")
    if "label_smoothing" in model:
        _number("model.label_smoothing", model.label_smoothing, non_negative=True, below=1)

    opt = cfg.optimizer
    _number("optimizer.lr", opt.lr, positive=True)
    if "weight_decay" in opt:
        _number("optimizer.weight_decay", opt.weight_decay, non_negative=True)
    if "momentum" in opt:
        _number("optimizer.momentum", opt.momentum, non_negative=True)
        if opt.get("nesterov") and opt.momentum <= 0:
            raise LightsweepError(
                "optimizer.nesterov=true needs optimizer.momentum > 0: use optimizer=nesterov"
            )

    scheduler = cfg.get("scheduler") or {}
    if "step_size" in scheduler:  # StepLR takes 0, then divides by it after the first epoch
        _number("scheduler.step_size", scheduler.step_size, positive=True, integer=True)
    if "T_max" in scheduler:
        _number("scheduler.T_max", scheduler.T_max, positive=True, integer=True)

    trainer = cfg.trainer
    _number("trainer.max_epochs", trainer.max_epochs, positive=True, integer=True)
    _number("trainer.log_every_n_steps", trainer.log_every_n_steps, positive=True, integer=True)
