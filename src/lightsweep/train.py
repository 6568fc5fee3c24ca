"""`train(cfg)`: build everything from the composed config, fit, test, log, return the metrics."""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lightsweep.config import choose_binary_task, project_root, validate
from lightsweep.errors import LightsweepError

log = logging.getLogger(__name__)


class TrainingDiverged(LightsweepError):
    """The loss became NaN/inf; the run is stopped and marked FAILED."""


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
    from lightsweep.sweeps.naming import run_name

    model, optimizer = choices.get("model", "model"), choices.get("optimizer", "opt")
    if job is None:
        return run_name(model, optimizer, cfg.seed)
    return run_name(model, optimizer, cfg.seed, lr=cfg.optimizer.lr, overrides=job.varying_overrides)


def run_tags(cfg: DictConfig, choices: dict[str, str]) -> dict[str, str]:
    from lightsweep.tracking.params import git_commit, mask_overrides, mask_secrets

    tags = {group: choices[group] for group in ("model", "optimizer", "data", "scheduler", "trainer") if group in choices}
    tags["seed"] = str(cfg.seed)
    tags["mlflow.source.name"] = "train.py"
    tags["mlflow.source.type"] = "LOCAL"
    if commit := git_commit(project_root()):
        tags["mlflow.source.git.commit"] = commit
    if overrides := hydra_overrides():
        tags["overrides"] = mask_overrides(overrides)
    tags.update({str(k): str(mask_secrets(v, str(k))) for k, v in (cfg.get("tags") or {}).items()})
    return tags


def import_job_modules() -> None:
    """Import what `train` imports lazily: torch, Lightning, MLflow's client and store, pyplot.

    The fork server of parallel sweeps' workers calls it (sweeps/worker_preload.py)."""
    # Lightning gives its logger a handler of its own, and stops it propagating, when it is imported
    # before logging is set up; a job sets up logging first, and its log file gets Lightning's lines.
    root = logging.getLogger()
    placeholder = logging.NullHandler()
    if not root.handlers:
        root.addHandler(placeholder)
    try:
        import pytorch_lightning  # noqa: F401  (torch, torchmetrics, torchvision)
    finally:
        root.removeHandler(placeholder)

    import lightsweep.callbacks  # noqa: F401
    import lightsweep.cli  # noqa: F401  (the task function the jobs arrive with)
    import lightsweep.data.base  # noqa: F401
    import lightsweep.models.base  # noqa: F401
    from lightsweep.plots import pyplot

    pyplot()
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401  (sqlite and PostgreSQL stores)
    import mlflow.tracking  # noqa: F401

    import lightsweep.tracking.logger  # noqa: F401
    import lightsweep.tracking.run  # noqa: F401


def train(cfg: DictConfig) -> dict[str, float]:
    """Train and test one model; every outcome lands in MLflow (unless logger=none).

    Returns the final metrics (`val/acc`, `test/acc`, ...) plus `run_id` when tracked. In a sweep
    the run is a child of the sweep's parent run, created before validation so that a job with a
    bad value still shows up, as FAILED.
    """
    from lightsweep.sweeps.context import current_job
    from lightsweep.tracking.run import sigterm_as_interrupt

    job = current_job()
    in_sweep = job is not None and job.sweep is not None
    sweep = job.sweep if in_sweep and job.sweep.tracked else None
    if sweep is None:
        _check(cfg, in_sweep)  # refuse bad input before touching the store (or importing Lightning)
    with sigterm_as_interrupt():
        return _train(cfg, job, sweep)


def _train(cfg: DictConfig, job, sweep) -> dict[str, float]:
    tracking_cfg = (cfg.get("logger") or {}).get("mlflow")

    from pytorch_lightning.utilities import rank_zero_only

    # Untracked, or a DDP worker process (those log through rank 0's run only).
    if tracking_cfg is None or rank_zero_only.rank != 0:
        if sweep is not None:
            _check(cfg, True)
        return _fit_and_report(cfg, None, None)

    from lightsweep.sweeps.naming import config_label
    from lightsweep.tracking.params import mask_overrides
    from lightsweep.tracking.run import create_run, reopen_run, tracked_run
    from lightsweep.tracking.store import ensure_experiment, open_store

    choices = hydra_choices(cfg)
    run_name = cfg.get("run_name") or run_name_for(cfg, choices, job)
    tags = run_tags(cfg, choices)
    if sweep is not None:
        # Ids from the parent process: a job never creates the experiment (parallel jobs would race).
        uri, client, experiment_id = sweep.tracking_uri, open_store(sweep.tracking_uri), sweep.experiment_id
        tags.update({
            "mlflow.parentRunId": sweep.parent_run_id,
            "lightsweep.sweep_id": sweep.sweep_id,
            "lightsweep.job": str(job.num),
            "lightsweep.config": config_label(run_name),
            "overrides": mask_overrides(job.overrides),
        })
    else:
        uri = tracking_cfg.tracking_uri
        client = open_store(uri)
        experiment_id = ensure_experiment(client, uri, tracking_cfg.experiment_name)
    point = None
    if (resume := _resume_request(cfg)) is not None:
        from lightsweep.resume import find_resume_point

        point = find_resume_point(client, experiment_id, resume, run_params(cfg), str(cfg.paths.output_dir))
        run_id = reopen_run(client, point.run_id)
    else:
        run_id = create_run(client, experiment_id, run_name, tags)
    with tracked_run(client, run_id):
        if sweep is not None:
            _check(cfg, True)
        return _fit_and_report(cfg, client, run_id, tracking_uri=uri, resume=point)


def _resume_request(cfg: DictConfig) -> str | None:
    """`resume=<run id>|last`, or `ckpt_path=last` (Lightning's spelling of the same)."""
    resume = cfg.get("resume") or (cfg.get("ckpt_path") if cfg.get("ckpt_path") == "last" else None)
    return None if resume is None else str(resume)


def _check(cfg: DictConfig, in_sweep: bool) -> None:
    choose_binary_task(cfg)
    validate(cfg)
    if _resume_request(cfg) is None:
        return
    if in_sweep:
        raise LightsweepError("resume= continues one run, not a sweep: rerun the sweep's failed jobs instead")
    if not (cfg.get("logger") or {}).get("mlflow"):
        raise LightsweepError("resume= finds the run in MLflow, but logger=none: pass ckpt_path=<file> instead")
    if "ddp" in str(cfg.trainer.get("strategy", "")):
        raise LightsweepError("resume= does not support DDP runs (trainer.strategy=ddp): start the run again")


def _masked_config(cfg: DictConfig) -> dict:
    from lightsweep.tracking.params import mask_secrets

    # `hydra` is present when composed with return_hydra_config (tests); it is not the run's config.
    run_config = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return mask_secrets(OmegaConf.to_container(run_config, resolve=True))


def run_params(cfg: DictConfig) -> dict[str, str]:
    """The run's MLflow params: the resolved config, flattened with dots, secrets masked."""
    from lightsweep.tracking.params import flatten

    return flatten(_masked_config(cfg))


def _log_config(client, run_id: str, cfg: DictConfig) -> None:
    from mlflow.entities import Param

    from lightsweep.tracking.params import flatten

    masked = _masked_config(cfg)
    params = [Param(k, v) for k, v in flatten(masked).items()]
    for start in range(0, len(params), 100):  # MLflow accepts 100 params per batch
        client.log_batch(run_id, params=params[start : start + 100])
    client.log_text(run_id, OmegaConf.to_yaml(OmegaConf.create(masked)), "config.yaml")


def _build(cfg: DictConfig, run_id: str | None, tracking_uri: str | None):
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ProgressBar

    from lightsweep.callbacks import EpochHistory, RandomState

    _limit_threads(cfg.get("threads"))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = _instantiate(cfg, "data", _convert_="all")
    optimizer = _instantiate(cfg, "optimizer")
    scheduler = _instantiate(cfg, "scheduler") if cfg.get("scheduler") else None
    # Plain lists, not ListConfig, so the checkpoint loads with torch.load(weights_only=True).
    model = _instantiate(cfg, "model", optimizer=optimizer, scheduler=scheduler, _convert_="all")
    history = EpochHistory()
    callbacks = [
        _instantiate(cfg, f"callbacks.{name}")
        for name, c in (cfg.get("callbacks") or {}).items()
        if c and "_target_" in c
    ]
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a bar it was told not to show
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    logger = False
    if run_id is not None:
        logger = _instantiate(cfg, "logger.mlflow", run_id=run_id, tracking_uri=tracking_uri)
    trainer = _instantiate(cfg, "trainer", callbacks=[*callbacks, history, RandomState()], logger=logger)
    return datamodule, model, trainer, history


def _instantiate(cfg: DictConfig, key: str, **kwargs):
    """`hydra.utils.instantiate(cfg.<key>)`; a wrong key or value is the user's to fix, in one line."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(OmegaConf.select(cfg, key), **kwargs)
    except InstantiationException as err:
        cause = err.__cause__ or err  # e.g. TypeError: unexpected keyword argument 'bogus'
        reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        raise LightsweepError(f"cannot build {key} from the config ({reason}): check the {key}.* overrides") from err


def _limit_threads(threads: int | None) -> None:
    import os

    import torch
    from hydra.core.hydra_config import HydraConfig

    if threads is None and HydraConfig.initialized():
        n_jobs = HydraConfig.get().launcher.get("n_jobs")
        cores = os.cpu_count() or 1
        if n_jobs is not None and n_jobs != 1:
            threads = max(1, cores // (cores if n_jobs < 0 else n_jobs))
    if threads:
        torch.set_num_threads(int(threads))


def _fit_and_report(cfg: DictConfig, client, run_id: str | None, tracking_uri: str | None = None, resume=None) -> dict[str, float]:
    from lightsweep.startup import resume_gc

    resume_gc()  # the libraries are in; what this run builds from here must stay collectable
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = cfg.get("ckpt_path")
    if resume is not None:
        # Same run, same checkpoint folder: Lightning restores the best-checkpoint bookkeeping too.
        ckpt_path = str(resume.checkpoint)
        cfg = _with_checkpoint_dir(cfg, str(resume.checkpoint_dir))
    elif client is not None:
        _log_config(client, run_id, cfg)
    datamodule, model, trainer, history = _build(cfg, run_id, tracking_uri)
    if ckpt_path:
        from lightsweep.resume import check_checkpoint_fits

        check_checkpoint_fits(ckpt_path, model)

    with _runtime_cuda_check_on_cpu(trainer):
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path or None, weights_only=True)
        if trainer.interrupted:
            raise KeyboardInterrupt  # Lightning swallowed Ctrl-C; the run must end KILLED, not FINISHED

        checkpoint = trainer.checkpoint_callback
        best_path = checkpoint.best_model_path if checkpoint is not None else ""
        diverged = history.diverged_at is not None
        tested = cfg.get("test", True) and not diverged
        metrics = _scalars(trainer.callback_metrics)  # fit's last values; test replaces callback_metrics
        if tested:
            trainer.test(model, datamodule=datamodule, ckpt_path=best_path or None, verbose=False, weights_only=True)
            metrics.update(_scalars(trainer.callback_metrics))

    # Gathered over DDP ranks during trainer.test (also from spawned workers); only rank 0 draws and logs.
    confusion = history.test_confusion if tested else None
    if trainer.is_global_zero:
        artifacts = _draw_plots(cfg, model, datamodule, history, output_dir / "plots", confusion)
        if client is not None:
            for path in artifacts:
                client.log_artifact(run_id, str(path), "plots")
            if best_path:
                client.log_artifact(run_id, best_path, "checkpoints")
            if diverged:
                client.set_tag(run_id, "lightsweep.diverged", "true")
    if diverged:
        raise TrainingDiverged(
            f"training diverged (non-finite loss in epoch {history.diverged_at + 1}): lower optimizer.lr "
            f"(now {cfg.optimizer.lr}) or add weight decay"
        )
    if run_id is not None:
        metrics["run_id"] = run_id
    if trainer.is_global_zero:
        _print_summary(metrics, run_id, tracking_uri, output_dir)
    return metrics


@contextlib.contextmanager
def _runtime_cuda_check_on_cpu(trainer):
    """On a CPU trainer, let `torch.cuda.is_available()` use torch's cached runtime answer.

    Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 when imported (its device checks must not
    initialise CUDA before a fork). torch then loads libnvidia-ml with ctypes at every such call
    until CUDA is initialised, which a CPU run never does; and Adam's `step()` asks at every step:
    ~0.1 ms, a quarter of a softmax step here. A CPU run forks nothing that uses CUDA (DDP workers
    are spawned), so the runtime check is safe while it trains.
    """
    import os

    from pytorch_lightning.accelerators import CPUAccelerator

    variable = "PYTORCH_NVML_BASED_CUDA_CHECK"
    saved = os.environ.get(variable)
    if isinstance(trainer.accelerator, CPUAccelerator):
        os.environ.pop(variable, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[variable] = saved


def _with_checkpoint_dir(cfg: DictConfig, folder: str) -> DictConfig:
    cfg = cfg.copy()
    for callback in (cfg.get("callbacks") or {}).values():
        if callback and "dirpath" in callback:
            callback.dirpath = folder
    return cfg


def _scalars(callback_metrics) -> dict[str, float]:
    return {k: float(v) for k, v in callback_metrics.items() if v.numel() == 1}


def _draw_plots(cfg, model, datamodule, history, plot_dir: Path, confusion) -> list[Path]:
    import torch

    from lightsweep import plots

    paths = [plots.learning_curves(history.history, plot_dir / "learning_curves.png")]
    names = datamodule.class_names
    if confusion is not None:
        paths.append(plots.confusion_matrix(confusion, names, plot_dir / "confusion_matrix.png"))
    net = model.net
    if hasattr(net, "linear") and datamodule.image_shape and net.linear.out_features > 1:
        paths.append(plots.weight_templates(net.linear.weight, datamodule.image_shape, names, plot_dir / "weights.png"))
    if cfg.data.input_dim == 2:
        x, y = (t.cpu() for t in datamodule.tensors["test"])
        model_cpu = model.cpu().eval()

        def predict_proba(points: torch.Tensor) -> torch.Tensor:
            logits = model_cpu(points)
            return logits.sigmoid() if logits.ndim == 1 else logits.softmax(dim=1)[:, 1]

        paths.append(plots.decision_boundary(predict_proba, x, y, names, plot_dir / "decision_boundary.png"))
    return paths


def _print_summary(metrics: dict, run_id: str | None, tracking_uri: str | None, output_dir: Path) -> None:
    from lightsweep.tracking.store import ui_command

    parts = [f"{k}={metrics[k]:.4f}" for k in ("test/acc", "test/loss", "val/acc") if k in metrics and not math.isnan(metrics[k])]
    print(f"\n{' '.join(parts)}")
    if run_id is not None:
        print(f"MLflow run {run_id}")
        print(f"Review it: {ui_command(tracking_uri)}")
    print(f"Outputs: {output_dir}")
