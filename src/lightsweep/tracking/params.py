"""Turning a resolved config into MLflow params and tags, with secrets masked."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from lightsweep.overrides import override_key
from lightsweep.tracking.uris import describe

SECRET_KEY = re.compile(r"(password|passwd|secret|token|api[_-]?key|credential|private[_-]?key|auth)", re.I)
MASK = "***"
MAX_PARAM_LENGTH = 6000  # MLflow's limit for a param value


def mask_secrets(value, key: str = ""):
    """A copy of a plain config container with secret-looking keys and URI passwords masked."""
    if isinstance(value, dict):
        return {k: mask_secrets(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v, key) for v in value]
    if SECRET_KEY.search(key) and value is not None:
        return MASK
    if isinstance(value, str) and "://" in value:
        return describe(value)
    return value


def mask_override(override: str) -> str:
    """`+logger.mlflow.password=x` -> `+logger.mlflow.password=***` (and URI passwords)."""
    if "=" not in override:
        return override
    key, value = override.split("=", 1)
    return f"{key}={mask_secrets(value, override_key(override))}"


def mask_overrides(overrides) -> str:
    """Command-line overrides as one tag value, secrets masked."""
    return " ".join(mask_override(str(o)) for o in overrides)[:5000]


def flatten(value, prefix: str = "") -> dict[str, str]:
    """{'model': {'hidden_sizes': [256]}} -> {'model.hidden_sizes': '[256]'}: keys match CLI overrides."""
    if isinstance(value, dict) and value:
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    text = "null" if value is None else str(value)
    return {prefix: text[:MAX_PARAM_LENGTH]}


def git_commit(repo: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
