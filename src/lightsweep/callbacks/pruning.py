"""Pruning: a job that is a trial of an Optuna study with a pruner reports its validation metric every
epoch, and stops early when the pruner says that the trial is hopeless."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl

from lightsweep.sweeps.study import PRUNED_ATTR

log = logging.getLogger(__name__)


class OptunaPruning(pl.Callback):
    """Reports `monitor` (the metric the search optimizes) to `trial` after each validation, at step
    `current_epoch`, and stops training when the study's pruner prunes the trial.

    A pruned job stops as an early-stopped one does (`trainer.should_stop`; nothing raised inside fit):
    the run ends FINISHED, tagged `lightsweep.pruned=true` and `lightsweep.pruned_epoch`, and the
    trial gets the user attribute `lightsweep.pruned_epoch`, from which the sweeper tells Optuna the
    trial was PRUNED. Only these trainer attributes are used: `sanity_checking`, `callback_metrics`,
    `current_epoch`, `should_stop` and `loggers` (and, where present, `is_global_zero`, `world_size`
    and `strategy` for DDP), so that a vectorized group can drive one instance per member with a
    stand-in trainer of that member.
    """

    def __init__(self, trial, monitor: str):
        self.trial = trial
        self.monitor = monitor
        self.pruned_epoch: int | None = None

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.pruned_epoch is not None:
            return
        prune = False
        if getattr(trainer, "is_global_zero", True):
            value = trainer.callback_metrics.get(self.monitor)
            if value is not None:
                self.trial.report(float(value), step=int(trainer.current_epoch))
                prune = self.trial.should_prune()
        if getattr(trainer, "world_size", 1) > 1:  # every DDP rank stops at the same epoch
            prune = trainer.strategy.broadcast(prune, src=0)
        if not prune:
            return
        epoch = int(trainer.current_epoch)
        self.pruned_epoch = epoch
        trainer.should_stop = True
        if not getattr(trainer, "is_global_zero", True):
            return
        self.trial.set_user_attr(PRUNED_ATTR, epoch)
        for logger in trainer.loggers:
            if getattr(logger, "run_id", None) and hasattr(logger, "experiment"):  # MLflow's logger
                logger.experiment.set_tag(logger.run_id, "lightsweep.pruned", "true")
                logger.experiment.set_tag(logger.run_id, "lightsweep.pruned_epoch", str(epoch))
        log.info("trial %d pruned after epoch %d (%s)", self.trial.number, epoch, self.monitor)


def trial_pruning(sweep_dir: Path | None = None, job_num: int | None = None) -> OptunaPruning | None:
    """The pruning callback of a sweep job that is a trial of a study with a pruner, else None.

    Without arguments: the current Hydra job's (its sweep dir and job number). A vectorized group
    passes a member's own."""
    if sweep_dir is None or job_num is None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized() or HydraConfig.get().mode == RunMode.RUN:
            return None
        hydra_cfg = HydraConfig.get()
        if hydra_cfg.job.get("num") is None:  # not a job of a sweep
            return None
        sweep_dir, job_num = Path(str(hydra_cfg.sweep.dir)), int(hydra_cfg.job.num)
    from lightsweep.sweeps.study import trial_for_job

    found = trial_for_job(Path(sweep_dir), int(job_num))
    return OptunaPruning(*found) if found is not None else None
