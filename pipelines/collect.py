"""End a cluster sweep that did not wait for its SLURM tasks: `python pipelines/collect.py sweep=<id>`.

`python train.py -m hydra/launcher=slurm hydra.launcher.wait=false ...` submits the tasks, records
them on the sweep's parent run (and in its sweep dir) and returns. This waits for the tasks (or, with
wait=false, only looks), collects each job's result as the waiting launcher does (the runs of tasks
that died without a word end FAILED or KILLED with SLURM's reason), logs the best model, builds the
report and ends the parent run. Exit 0, 1 when a job failed, 2 for bad input, 3 when wait=false
finds tasks still running, 130 on Ctrl-C (the tasks run on: collect again later).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

import lightsweep.resolvers  # noqa: F401  (conf/ uses them)
from lightsweep.config import project_root
from lightsweep.errors import LightsweepError


def latest_detached(client, experiment_name: str | None) -> str:
    """The newest sweep still waiting to be collected."""
    from lightsweep.sweeps.report import newest_run

    return newest_run(
        client,
        experiment_name,
        "tags.`lightsweep.detached` = 'true' and attributes.status = 'RUNNING'",
        "no sweep waits to be collected in this store: pass sweep=<parent run id> (a sweep started with "
        "hydra.launcher.wait=false)",
    )


@hydra.main(version_base="1.3", config_path=str(project_root() / "conf"), config_name="collect")
def main(cfg: DictConfig) -> None:
    from mlflow.exceptions import MlflowException

    from hydra_plugins.lightsweep_submitit.slurm_launcher import collect_sweep
    from lightsweep.tracking.store import open_store

    try:
        client = open_store(cfg.tracking_uri)
        sweep = str(cfg.sweep)
        if sweep == "latest":
            sweep = latest_detached(client, cfg.experiment_name)
        try:
            client.get_run(sweep)
        except MlflowException:
            raise LightsweepError(
                f"sweep={sweep}: no such run in this store; pass the parent run id the sweep printed"
            ) from None
        code = collect_sweep(client, sweep, wait=bool(cfg.wait))
    except LightsweepError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("interrupted (SIGINT): stopped waiting; the tasks run on, collect them again later", file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(code)


if __name__ == "__main__":
    main()
