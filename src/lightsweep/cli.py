"""The command line: Hydra composes `conf/`, `train(cfg)` does the work.

Errors the user can fix (LightsweepError) are printed as one line; the exit code is 2.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from lightsweep.config import project_root
from lightsweep.errors import LightsweepError

log = logging.getLogger("lightsweep")


def task(cfg: DictConfig):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from lightsweep.train import train

    try:
        metrics = train(cfg)
    except LightsweepError as err:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the sweep records the failed job and goes on
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    objective = cfg.get("optimized_metric")
    return metrics.get(objective) if objective else metrics


main = hydra.main(version_base="1.3", config_path=str(project_root() / "conf"), config_name="config")(task)

if __name__ == "__main__":
    main()
