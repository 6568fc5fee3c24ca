"""The OmegaConf resolvers `conf/` uses, registered on import (before Hydra composes)."""

from __future__ import annotations

import math

from omegaconf import OmegaConf

from lightsweep.config import count_classes, project_root
from lightsweep.sweeps.context import job_dirname


def register_resolvers() -> None:
    resolvers = {
        "project_root": lambda: str(project_root()),
        "prod": lambda values: math.prod(values),
        "num_classes": count_classes,
        "job_dirname": lambda sweep_dir, override_dirname: job_dirname(str(sweep_dir), str(override_dirname)),
    }
    for name, fn in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


register_resolvers()
