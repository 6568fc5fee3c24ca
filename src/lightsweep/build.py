"""Data, model and trainer from the composed config (Hydra's `instantiate`), with bad values in one line."""

from __future__ import annotations

import os
import re

from omegaconf import DictConfig, OmegaConf

from lightsweep.errors import LightsweepError


def build(cfg: DictConfig, run=None, tested: bool = True):
    """(datamodule, model, trainer) for `cfg`; `run` (a tracking.setup.RunHandle) gets the logger."""
    from pytorch_lightning.callbacks import ProgressBar

    from lightsweep.callbacks import EpochHistory, ProcessGroupExit, RandomState, RunArtifacts, SignalCheck
    from lightsweep.callbacks.pruning import trial_pruning
    from lightsweep.sweeps.context import current_job
    from lightsweep.tracking.models import logs_own_model
    from lightsweep.tracking.setup import hydra_choices

    limit_threads(cfg.get("threads"))
    flush_denormal(cfg.get("flush_denormal", False))
    datamodule, model = build_model(cfg)
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
        plot_dir, tested=tested, log_model=logs_own_model(cfg, in_sweep), data_name=hydra_choices(cfg).get("data")
    )
    # ProcessGroupExit: a DDP worker's gloo threads end before Python's finalization (else a rare SIGABRT).
    callbacks += [EpochHistory(), RandomState(), SignalCheck(), ProcessGroupExit(), artifacts]
    if (pruning := trial_pruning()) is not None:  # a trial of an Optuna study with a pruner
        callbacks.append(pruning)
    logger = False
    if run is not None:
        logger = instantiate(cfg, "logger.mlflow", run_id=run.run_id, tracking_uri=run.tracking_uri)
    trainer = instantiate(cfg, "trainer", callbacks=callbacks, logger=logger)
    return datamodule, model, trainer


def build_model(cfg: DictConfig):
    """(datamodule, model) for `cfg`, seeded: the model's initial weights are the run's (a vectorized
    sweep builds each member's this way too)."""
    import pytorch_lightning as pl

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg, "data", _convert_="all")
    optimizer = instantiate(cfg, "optimizer")
    scheduler = instantiate(cfg, "scheduler") if cfg.get("scheduler") else None
    # Plain lists, not ListConfig, so the checkpoint loads with torch.load(weights_only=True).
    model = instantiate(cfg, "model", optimizer=optimizer, scheduler=scheduler, _convert_="all")
    check_optimizer(cfg, model)
    return datamodule, model


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
    try:
        model.configure_optimizers()
    except (ValueError, TypeError, KeyError) as err:
        groups = "optimizer" if cfg.get("scheduler") is None else ("optimizer", "scheduler")
        raise LightsweepError(rejected(cfg, groups, err)) from err


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
            value = OmegaConf.to_container(node)[key] if OmegaConf.is_config(node) else node[key]
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
