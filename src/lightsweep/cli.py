"""The command line (`python train.py`, the `lightsweep` console script): Hydra composes `conf/`,
`train(cfg)` does the work.

Errors the user can fix (LightsweepError) are printed as one line; the exit code is 2. Ctrl-C and
SIGTERM, at any moment of a run or a sweep, exit 130 and 143 (lightsweep.entry, as every command);
in a sweep a failed job fails its run and the others go on (`guarded`).
"""

from __future__ import annotations

import logging
import sys
import warnings

from omegaconf import DictConfig

from lightsweep import interrupts
from lightsweep.entry import command, exit_code

log = logging.getLogger("lightsweep")

# Lightning 2.6's CombinedLoader uses torch's pytree in a way torch 2.14 deprecates: one line per
# run that the user can do nothing about.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
# Lightning notices an installed `srun` and suggests running under it, on every local run.
warnings.filterwarnings("ignore", message=r"The `srun` command is available")


@command("config", pause_gc=True)
def task(cfg: DictConfig):
    """One run, or one job of a sweep. Returns `cfg.optimized_metric` (for Optuna) or all metrics."""
    from lightsweep.train import train

    return for_sweeper(cfg, guarded(cfg, train))


def guarded(cfg: DictConfig, work, sweeping: bool | None = None):
    """`work(cfg)` with the command line's handling of what goes wrong: a signal exits 130/143 (the run
    is KILLED); in a single run an error goes up (a user error becomes one line, exit 2, in the
    command's entry); in a sweep a failed job returns {"failed": reason} (its run is FAILED) so that
    the other jobs, the report and an Optuna study go on.

    One job's call (`sweeping` not given: Hydra's config is that job's) records its failure in the
    sweep dir (sweeps.failures), so that the sweep counts it even if it failed before its run existed."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from lightsweep.sweeps import failures

    one_job = sweeping is None
    try:
        result = work(cfg)
    except BaseException as err:
        if (signal_name := interrupts.interruption(err)) is None and not isinstance(err, Exception):
            raise
        if sweeping is None:  # (a launcher that trains several jobs at once says so: no job's config is set then)
            sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
        if signal_name is not None:
            # The run is KILLED and its checkpoints stay; a sweep stops too (the user asked it to).
            then = "the sweep stops" if sweeping else "continue it with the same overrides plus resume=last"
            print(
                f"interrupted ({signal_name}): the run is marked KILLED, its checkpoints are kept; {then}",
                file=sys.stderr,
            )
            raise SystemExit(exit_code(signal_name)) from None
        if not sweeping:
            raise  # a user error is one line (lightsweep.entry); a bug keeps its traceback
        log.error("job failed: %s: %s", type(err).__name__, err)
        print(f"job failed: {err}", file=sys.stderr)
        if one_job:
            failures.record(err)
        return {"failed": str(err)}
    if one_job:
        failures.clear()
    return result


def for_sweeper(cfg: DictConfig, result):
    """What a job returns to its sweeper: `optimized_metric`'s value (a failed trial scores
    `objective_on_failure`), a list of values for a list of metrics (multi-objective), or all metrics."""
    from omegaconf import OmegaConf

    objective = cfg.get("optimized_metric")
    if not objective:
        return result

    def value(key):
        return cfg.get("objective_on_failure", float("nan")) if "failed" in result else result.get(key)

    if OmegaConf.is_list(objective) or isinstance(objective, (list, tuple)):
        return [value(str(key)) for key in objective]
    return value(objective)


# `python train.py ...` and the `lightsweep` console script: Ctrl-C and SIGTERM are handled from the
# first moment (composing, between a sweep's jobs, in its report) to the last.
run = task.run


if __name__ == "__main__":
    run()
