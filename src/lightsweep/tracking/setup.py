"""A run's set-up in MLflow: its name, tags and params, created (or reopened) in the right store."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from lightsweep.config import project_root


@dataclass
class RunHandle:
    """The MLflow run a training process logs to (rank 0 only)."""

    client: object
    tracking_uri: str
    run_id: str
    resume: object = None  # lightsweep.resume.ResumePoint when continuing an interrupted run
    kept: object = None  # a resumed sweep's FINISHED run of this job (an mlflow Run), kept as it is


def hydra_choices(cfg: DictConfig) -> dict[str, str]:
    """Which option of each config group was picked (`model` -> `softmax`)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return {k: str(v) for k, v in HydraConfig.get().runtime.choices.items() if v is not None and "/" not in k}
    # Called without Hydra (e.g. from a notebook): fall back to class names.
    return {
        group: str(cfg[group]["_target_"]).rsplit(".", 1)[-1].lower()
        for group in ("model", "optimizer", "data")
        if cfg.get(group) and "_target_" in cfg[group]
    }


def hydra_overrides() -> list[str]:
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def run_name_for(cfg: DictConfig, choices: dict[str, str], job) -> str:
    from lightsweep.naming import run_name

    model, optimizer = choices.get("model", "model"), choices.get("optimizer", "opt")
    if job is None:
        return run_name(model, optimizer, cfg.seed)
    return run_name(model, optimizer, cfg.seed, lr=cfg.optimizer.lr, overrides=job.varying_overrides)


def run_tags(cfg: DictConfig, choices: dict[str, str]) -> dict[str, str]:
    from lightsweep.tracking.params import git_commit, mask_overrides, mask_secrets

    tags = {
        group: choices[group] for group in ("model", "optimizer", "data", "scheduler", "trainer") if group in choices
    }
    tags["seed"] = str(cfg.seed)
    tags["mlflow.source.name"] = "train.py"
    tags["mlflow.source.type"] = "LOCAL"
    if commit := git_commit(project_root()):
        tags["mlflow.source.git.commit"] = commit
    if overrides := hydra_overrides():
        tags["overrides"] = mask_overrides(overrides)
    tags.update({str(k): str(mask_secrets(v, str(k))) for k, v in (cfg.get("tags") or {}).items()})
    return tags


def masked_config(cfg: DictConfig) -> dict:
    from lightsweep.tracking.params import mask_secrets

    # `hydra` is present when composed with return_hydra_config (tests); it is not the run's config.
    run_config = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return mask_secrets(OmegaConf.to_container(run_config, resolve=True))


def run_params(cfg: DictConfig) -> dict[str, str]:
    """The run's MLflow params: the resolved config, flattened with dots, secrets masked."""
    from lightsweep.tracking.params import flatten

    return flatten(masked_config(cfg))


def log_config(client, run_id: str, cfg: DictConfig) -> None:
    """Params (tracking.batches) and the resolved config as `config.yaml`."""
    from mlflow.entities import Param

    from lightsweep.tracking.batches import log_batch
    from lightsweep.tracking.params import flatten

    masked = masked_config(cfg)
    log_batch(client, run_id, params=[Param(k, v) for k, v in flatten(masked).items()])
    client.log_text(run_id, OmegaConf.to_yaml(OmegaConf.create(masked)), "config.yaml")


def resume_request(cfg: DictConfig) -> str | None:
    """`resume=<run id>|last`, or `ckpt_path=last` (Lightning's spelling of the same)."""
    resume = cfg.get("resume") or (cfg.get("ckpt_path") if cfg.get("ckpt_path") == "last" else None)
    return None if resume is None else str(resume)


def open_run(cfg: DictConfig, job, sweep) -> RunHandle | None:
    """Create this run (a child of the sweep's parent in a sweep), or reopen the one to resume.

    None when nothing is tracked (logger=none) and in DDP ranks other than 0, which log through
    rank 0's run only.
    """
    from pytorch_lightning.utilities import rank_zero_only

    tracking_cfg = (cfg.get("logger") or {}).get("mlflow")
    if tracking_cfg is None or rank_zero_only.rank != 0:
        return None

    from lightsweep.naming import config_label
    from lightsweep.tracking.params import mask_overrides
    from lightsweep.tracking.run import create_run, reopen_run
    from lightsweep.tracking.store import ensure_experiment, open_store

    choices = hydra_choices(cfg)
    name = cfg.get("run_name") or run_name_for(cfg, choices, job)
    tags = run_tags(cfg, choices)
    if sweep is not None:
        # Ids from the parent process: a job never creates the experiment (parallel jobs would race).
        uri, client, experiment_id = sweep.tracking_uri, open_store(sweep.tracking_uri), sweep.experiment_id
        tags.update(
            {
                "mlflow.parentRunId": sweep.parent_run_id,
                "lightsweep.sweep_id": sweep.sweep_id,
                "lightsweep.job": str(job.num),
                "lightsweep.config": config_label(name),
                "overrides": mask_overrides(job.overrides),
            }
        )
    else:
        uri = tracking_cfg.tracking_uri
        client = open_store(uri)
        experiment_id = ensure_experiment(client, uri, tracking_cfg.experiment_name)
    if sweep is not None and sweep.resuming:
        from lightsweep.resume import job_resume_point
        from lightsweep.tracking.params import mask_override
        from lightsweep.tracking.run import reopen_run

        varying = [mask_override(o) for o in job.varying_overrides]
        found = job_resume_point(client, sweep, job.num, varying, run_params(cfg), str(cfg.paths.output_dir))
        if found is not None:
            previous, point = found
            if point is None:
                return RunHandle(client, uri, previous.info.run_id, kept=previous)
            return RunHandle(client, uri, reopen_run(client, previous.info.run_id), point)
        return RunHandle(client, uri, create_run(client, experiment_id, name, tags))
    if (resume := resume_request(cfg)) is not None:
        from lightsweep.resume import find_resume_point

        point = find_resume_point(client, experiment_id, resume, run_params(cfg), str(cfg.paths.output_dir))
        return RunHandle(client, uri, reopen_run(client, point.run_id), point)
    return RunHandle(client, uri, create_run(client, experiment_id, name, tags))
