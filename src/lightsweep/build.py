"""Data, model and trainer from the composed config (Hydra's `instantiate`), with bad values in one line."""

from __future__ import annotations

import os
import re

from omegaconf import DictConfig, OmegaConf

from lightsweep.errors import LightsweepError

# Lightning's own keys of an `lr_scheduler` dict; in a `scheduler` config they sit beside the
# scheduler's arguments (`interval: step`, `monitor: val/loss`) and go to Lightning, not to the scheduler.
LIGHTNING_SCHEDULER_KEYS = ("interval", "frequency", "monitor", "strict", "name")
# lightsweep's keys in an `optimizer` config, beside the optimizer's arguments: the parameter-group rule
# (lightsweep.models.param_groups) and the search space the optimizer suite tunes it in (docs/suite.md).
LIGHTSWEEP_OPTIMIZER_KEYS = ("param_groups", "search_space")


def build(cfg: DictConfig, run=None, tested: bool = True):
    """(datamodule, model, trainer) for `cfg`; `run` (a tracking.setup.RunHandle) gets the logger."""
    limit_threads(cfg.get("threads"))
    flush_denormal(cfg.get("flush_denormal", False))
    datamodule, model = build_model(cfg)
    callbacks, logger = build_callbacks(cfg, tested), build_logger(cfg, run)
    trainer = instantiate(cfg, "trainer", callbacks=callbacks, logger=logger, **cluster_plugins())
    return datamodule, model, trainer


def cluster_plugins() -> dict:
    """The trainer's plugins inside a SLURM job: Lightning's SLURM environment (ranks, nodes, addresses)
    without its own requeueing (SIGUSR1, `hpc_ckpt_*.ckpt` restored automatically): a task is requeued
    by submitit, at the warning signal lightsweep holds (lightsweep.requeue), one mechanism."""
    from pytorch_lightning.plugins.environments import SLURMEnvironment

    return {"plugins": [SLURMEnvironment(auto_requeue=False)]} if SLURMEnvironment.detect() else {}


def build_callbacks(cfg: DictConfig, tested: bool = True) -> list:
    """The run's Lightning callbacks: the config's (`callbacks.*`), then lightsweep's own (a vectorized
    sweep's member gets the same list: its job's)."""
    from pytorch_lightning.callbacks import ProgressBar

    from lightsweep import requeue
    from lightsweep.callbacks import (
        EpochHistory,
        OptimizerModes,
        ProcessGroupExit,
        RandomState,
        RequeueAtEpochStart,
        RunArtifacts,
        SignalCheck,
    )
    from lightsweep.callbacks.pruning import trial_pruning
    from lightsweep.sweeps.context import current_job
    from lightsweep.tracking.logged_models import logs_own_model
    from lightsweep.tracking.setup import hydra_choices

    callbacks = [
        instantiate(cfg, f"callbacks.{name}")
        for name, c in (cfg.get("callbacks") or {}).items()
        if c and "_target_" in c
    ]
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a bar it was told not to show
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    # What spawned DDP workers need comes in the callbacks' arguments: Hydra's config is not set there.
    plot_dir = os.path.join(str(cfg.paths.output_dir), "plots")
    job = current_job()
    in_sweep = job is not None and job.sweep is not None
    artifacts = RunArtifacts(
        plot_dir,
        tested=tested,
        log_model=logs_own_model(cfg, in_sweep),
        data_name=hydra_choices(cfg).get("data"),
        plots=bool(cfg.get("plots", True)),
    )
    # ProcessGroupExit: a DDP worker's gloo threads end before Python's finalization (else a rare SIGABRT).
    callbacks += [EpochHistory(), RandomState(), SignalCheck(), ProcessGroupExit(), artifacts]
    if optimizer_has_modes(cfg):  # Schedule-Free: validate, test and save its eval-mode weights
        callbacks.append(OptimizerModes())
    if (pruning := trial_pruning()) is not None:  # a trial of an Optuna study with a pruner
        callbacks.append(pruning)
    if requeue.holding():  # a SLURM task that may be requeued at its time limit
        callbacks.append(RequeueAtEpochStart())
    return callbacks


def optimizer_has_modes(cfg: DictConfig) -> bool:
    """Whether the run's optimizer class has a train and an eval mode (Schedule-Free optimizers)."""
    from hydra.utils import get_class

    from lightsweep.callbacks.schedulefree import has_modes

    target = OmegaConf.select(cfg, "optimizer._target_")
    try:
        return target is not None and has_modes(get_class(str(target)))
    except Exception:  # (building the optimizer says what is wrong with its target)
        return False


def build_logger(cfg: DictConfig, run=None):
    """The run's MLFlowLogger, logging to `run` (created by lightsweep); False when nothing is tracked.
    A resumed run's logger skips the steps the run has logged already (see tracking.logger)."""
    if run is None:
        return False
    logger = instantiate(cfg, "logger.mlflow", run_id=run.run_id, tracking_uri=run.tracking_uri)
    if run.resume is not None and hasattr(logger, "skip_through"):
        from lightsweep.tracking.logger import last_logged_steps

        logger.skip_through(last_logged_steps(run.client, run.run_id))
    return logger


def build_model(cfg: DictConfig):
    """(datamodule, model) for `cfg`, seeded: the model's initial weights are the run's (a vectorized
    sweep builds each member's this way too)."""
    import pytorch_lightning as pl

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg, "data", _convert_="all")
    # Plain lists and dicts, not ListConfig: what an optimizer or scheduler keeps (NAdam's betas) goes into
    # checkpoints, which load with torch.load(weights_only=True).
    optimizer, param_groups = build_optimizer(cfg)
    scheduler, scheduler_config = None, None
    if cfg.get("scheduler"):
        resolved = OmegaConf.to_container(cfg.scheduler, resolve=True)
        scheduler_config = {k: v for k, v in resolved.items() if k in LIGHTNING_SCHEDULER_KEYS}
        node = {k: v for k, v in resolved.items() if k not in LIGHTNING_SCHEDULER_KEYS}
        scheduler = instantiate(OmegaConf.create({"scheduler": node}), "scheduler", _convert_="all")
    model = instantiate(
        cfg,
        "model",
        optimizer=optimizer,
        scheduler=scheduler,
        scheduler_config=scheduler_config,
        param_groups=param_groups,
        _convert_="all",
    )
    check_optimizer(cfg, model)
    return datamodule, model


def build_optimizer(cfg: DictConfig):
    """(the optimizer's partial, its parameter-group rule or None): lightsweep's keys are not the optimizer's."""
    from lightsweep.models.param_groups import check_rules

    node = cfg.get("optimizer")
    if node is None or not any(key in node for key in LIGHTSWEEP_OPTIMIZER_KEYS):
        return instantiate(cfg, "optimizer", _convert_="all"), None
    resolved = OmegaConf.to_container(node, resolve=True)
    rules = resolved.pop("param_groups", None)
    resolved.pop("search_space", None)
    optimizer = instantiate(OmegaConf.create({"optimizer": resolved}), "optimizer", _convert_="all")
    return optimizer, check_rules(rules) if rules is not None else None


def instantiate(cfg: DictConfig, key: str, **kwargs):
    """`hydra.utils.instantiate(cfg.<key>)`; a wrong key or value is the user's to fix, in one line."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    try:
        return hydra_instantiate(OmegaConf.select(cfg, key), **kwargs)
    except InstantiationException as err:
        raise LightsweepError(rejected(cfg, key, err.__cause__ or err)) from err


def check_optimizer(cfg: DictConfig, model) -> None:
    """Build the optimizer and scheduler once now, as Lightning will: torch checks their values
    (betas, eps, alpha, ...) only then, which inside `fit` would be a traceback from deep in torch."""
    from torch.optim.lr_scheduler import ReduceLROnPlateau

    try:
        configured = model.configure_optimizers()
    except (ValueError, TypeError, KeyError) as err:
        groups = "optimizer" if cfg.get("scheduler") is None else ("optimizer", "scheduler")
        raise LightsweepError(rejected(cfg, groups, err)) from err
    lr_scheduler = configured.get("lr_scheduler", {}) if isinstance(configured, dict) else {}
    if isinstance(lr_scheduler.get("scheduler"), ReduceLROnPlateau) and not lr_scheduler.get("monitor"):
        raise LightsweepError(
            "scheduler.monitor is missing: ReduceLROnPlateau needs the metric it watches, e.g. scheduler.monitor=val/loss"
        )
    if lr_scheduler.get("interval", "epoch") not in ("epoch", "step"):
        raise LightsweepError(f"scheduler.interval must be epoch or step, got {lr_scheduler['interval']!r}")


def rejected(cfg: DictConfig, groups, err: BaseException) -> str:
    """One line naming the config key a library rejected (found in its message) and the fix."""
    groups = (groups,) if isinstance(groups, str) else groups
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
    words = reason.lower()
    for group in groups:
        node = OmegaConf.select(cfg, group) or {}
        keys = sorted((k for k in node if not str(k).startswith("_")), key=len, reverse=True)
        # A key's name in the message (longest first: `lr_decay` before `lr`; at a word's start: torch
        # says "beta" for `betas`, "epsilon" for `eps`), else a key whose text value is in it
        # (Lightning: "No supported gpu backend found!" for accelerator=gpu).
        named = [k for k in keys if re.search(rf"\b{re.escape(str(k).lower().rstrip('s'))}", words)]
        named = named or [
            k
            for k in keys
            if isinstance(node.get(k), str) and re.search(rf"\b{re.escape(node.get(k).lower())}\b", words)
        ]
        for key in named[:1]:
            target = str(node.get("_target_", group)).rsplit(".", 1)[-1]
            value = OmegaConf.to_container(node, resolve=True)[key] if OmegaConf.is_config(node) else node[key]
            fix = (
                f"remove {group}.{key}, {target} takes no such argument"
                if "unexpected keyword" in words
                else f"pass a valid {group}.{key}, or drop its override for the default"
            )
            return f"cannot build {group}: {group}.{key}={value} is rejected by {target} ({reason}): {fix}"
    return f"cannot build {groups[0]} from the config ({reason}): check the {groups[0]}.* overrides"


def flush_denormal(enabled: bool) -> None:
    """`flush_denormal`: subnormal floats count as zero in CPU arithmetic (torch.set_flush_denormal), or not.

    The mode belongs to each thread, and torch's CPU worker threads take the main thread's when they
    start, at the process's first parallel operation: so it is set per job before the job computes
    anything, and a process's jobs should agree on it (the optimizer_benchmark preset sets it for all).
    """
    import torch

    torch.set_flush_denormal(bool(enabled))


def limit_threads(threads: int | None) -> None:
    """Torch CPU threads: `threads`, else the cores shared out among a parallel launcher's jobs."""
    import torch
    from hydra.core.hydra_config import HydraConfig

    if threads is None and HydraConfig.initialized():
        n_jobs = HydraConfig.get().launcher.get("n_jobs")
        cores = os.cpu_count() or 1
        if n_jobs is not None and n_jobs != 1:
            threads = max(1, cores // (cores if n_jobs < 0 else n_jobs))
    if threads:
        torch.set_num_threads(int(threads))
