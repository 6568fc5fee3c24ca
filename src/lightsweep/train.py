"""`train(cfg)`: open the run, build, fit, test, return the metrics.

Each concern has its own module: the run's set-up in MLflow (tracking.setup) and its lifecycle
(tracking.run, the only owner of its status), building from the config (build), plots and the
checkpoint upload (callbacks.RunArtifacts, inside the processes that train), Ctrl-C and SIGTERM
(interrupts).
"""

from __future__ import annotations

import math
from pathlib import Path

from omegaconf import DictConfig

from lightsweep import interrupts
from lightsweep.config import choose_binary_task, validate
from lightsweep.errors import LightsweepError

LOSS_KEYS = ("train/loss_epoch", "val/loss")


class TrainingDiverged(LightsweepError):
    """The loss became NaN/inf; the run is stopped and marked FAILED."""


def train(cfg: DictConfig) -> dict[str, float]:
    """Train and test one model; every outcome lands in MLflow (unless logger=none).

    Returns the final metrics (`val/acc`, `test/acc`, ...) plus `run_id` when tracked. In a sweep
    the run is a child of the sweep's parent run, created before validation so that a job with a
    bad value still shows up, as FAILED. The run is FINISHED only once its params, metrics,
    config, plots and best checkpoint are stored.
    """
    from lightsweep.sweeps.context import current_job
    from lightsweep.tracking.run import tracked_run
    from lightsweep.tracking.setup import log_config, open_run

    job = current_job()
    in_sweep = job is not None and job.sweep is not None
    sweep = job.sweep if in_sweep and job.sweep.tracked else None
    if sweep is None:
        check_config(cfg, in_sweep)  # refuse bad input before touching the store (or importing Lightning)
    with interrupts.handled(), interrupts.held() as creating:
        # A signal while the run is created waits until `tracked_run` owns it (and ends it KILLED).
        run = open_run(cfg, job, sweep)
        if run is not None and run.kept is not None:  # a resumed sweep's job that had finished
            creating.release()
            return kept(run)
        if run is None:
            creating.release()
            if sweep is not None:
                check_config(cfg, True)
            return fit_and_test(cfg)
        with tracked_run(run.client, run.run_id):
            creating.release()
            if sweep is not None:
                check_config(cfg, True)
            if run.resume is None:
                log_config(run.client, run.run_id, cfg)
            return fit_and_test(cfg, run)


def kept(run) -> dict[str, float]:
    """What a resumed sweep's FINISHED job returns: its run's metrics, untouched."""
    print(f"job's run {run.run_id} had finished: kept as it is")
    return {**run.kept.data.metrics, "run_id": run.run_id}


def check_config(cfg: DictConfig, in_sweep: bool) -> None:
    from lightsweep.tracking.logged_models import check_log_models
    from lightsweep.tracking.setup import resume_request

    choose_binary_task(cfg)
    validate(cfg)
    check_log_models(cfg)
    if resume_request(cfg) is None:
        return
    if in_sweep:
        return  # the sweep is continued (the MLflow sweep callback found it); each job finds its own run
    if not (cfg.get("logger") or {}).get("mlflow"):
        raise LightsweepError("resume= finds the run in MLflow, but logger=none: pass ckpt_path=<file> instead")
    if "ddp" in str(cfg.trainer.get("strategy", "")):
        raise LightsweepError("resume= does not support DDP runs (trainer.strategy=ddp): start the run again")


def fit_and_test(cfg: DictConfig, run=None) -> dict[str, float]:
    from lightsweep.build import build
    from lightsweep.startup import resume_gc

    resume_gc()  # the libraries are in; what this run builds from here must stay collectable
    ckpt_path = cfg.get("ckpt_path")
    if run is not None and run.resume is not None and run.resume.checkpoint is not None:
        # Same run, same checkpoint folder: Lightning restores the best-checkpoint bookkeeping too.
        ckpt_path = str(run.resume.checkpoint)
        cfg = with_checkpoint_dir(cfg, str(run.resume.checkpoint_dir))
    tested = bool(cfg.get("test", True))
    datamodule, model, trainer = build(cfg, run, tested=tested)
    if ckpt_path:
        from lightsweep.resume import check_checkpoint_fits

        check_checkpoint_fits(ckpt_path, model)

    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path or None, weights_only=True)
    interrupts.check()  # a Ctrl-C that Lightning or a library swallowed
    if trainer.interrupted:
        raise KeyboardInterrupt  # the run must end KILLED, not FINISHED
    metrics = scalars(trainer.callback_metrics)  # fit's last values; test replaces callback_metrics
    diverged = diverged_key(metrics)
    if tested and diverged is None:
        checkpoint = trainer.checkpoint_callback
        best = checkpoint.best_model_path if checkpoint is not None else ""
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=False, weights_only=True)
        interrupts.check()
        metrics.update(scalars(trainer.callback_metrics))
    if diverged is not None:
        raise diverged_error(cfg, diverged)
    if run is not None:
        metrics["run_id"] = run.run_id
    if trainer.is_global_zero:
        _print_summary(metrics, run, Path(cfg.paths.output_dir))
    return metrics


def diverged_key(metrics: dict[str, float]) -> str | None:
    """The first loss that is not finite after fit (NaN/inf), else None."""
    return next((k for k in LOSS_KEYS if k in metrics and not math.isfinite(metrics[k])), None)


def diverged_error(cfg: DictConfig, key: str) -> TrainingDiverged:
    return TrainingDiverged(
        f"training diverged (non-finite {key}): lower optimizer.lr (now {cfg.optimizer.lr}) or add weight decay"
    )


def with_checkpoint_dir(cfg: DictConfig, folder: str) -> DictConfig:
    """`cfg` with every callback's checkpoint folder at `folder` (a resumed run's own)."""
    cfg = cfg.copy()
    for callback in (cfg.get("callbacks") or {}).values():
        if callback and "dirpath" in callback:
            callback.dirpath = folder
    return cfg


def scalars(callback_metrics) -> dict[str, float]:
    """A trainer's callback metrics as floats (what a run returns)."""
    return {k: float(v) for k, v in callback_metrics.items() if v.numel() == 1}


def _print_summary(metrics: dict, run, output_dir: Path) -> None:
    from lightsweep.tracking.uris import ui_command

    parts = [
        f"{k}={metrics[k]:.4f}"
        for k in ("test/acc", "test/loss", "val/acc")
        if k in metrics and not math.isnan(metrics[k])
    ]
    print(f"\n{' '.join(parts)}")
    if run is not None:
        print(f"MLflow run {run.run_id}")
        print(f"Review it: {ui_command(run.tracking_uri)}")
    print(f"Outputs: {output_dir}")
