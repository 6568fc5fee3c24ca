"""A vectorized group of sweep jobs: which jobs can train together, and training them.

`group_key(cfg)` says whether a job can join a group (and with whom: equal keys); `prepare(cfg)` runs
inside the job's own Hydra context (its output dir, `.hydra/` files, HydraConfig): it validates the
config and opens the job's MLflow child run as `train()` does, and builds what `lightsweep.build`
builds for any run (its module, callbacks and logger). `train_group(members)` then trains the prepared
members as one `StackedClassifier`; each member's own callbacks and logger write its run's outputs, as
its separate run's do, and the run lifecycle ends each run.
"""

from __future__ import annotations

import functools
import gc
import inspect
import logging
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from lightsweep import interrupts
from lightsweep.vectorized.members import Member

log = logging.getLogger(__name__)

# What members of one group may differ in: each member's own optimizer, schedule, seed and gradient clipping.
MEMBER_KEYS = ("optimizer", "scheduler", "seed", "run_name", "tags", "paths")
MEMBER_TRAINER_KEYS = ("gradient_clip_val", "gradient_clip_algorithm")  # (the group's trainer clips none)
# A member run's tag: its group's own last checkpoint (what a resumed sweep continues the group from).
GROUP_CHECKPOINT_TAG = "lightsweep.group_checkpoint"
# The metrics a member has (its callbacks may watch them).
MEMBER_METRICS = ("train/loss", "train/loss_epoch", "train/acc", "val/loss", "val/acc")


def group_key(cfg: DictConfig) -> tuple[str | None, str]:
    """(key, why): jobs with the same key train together; None runs the job alone, for the reason given."""
    from hydra.utils import get_class

    try:
        model = get_class(str(OmegaConf.select(cfg, "model._target_")))
        optimizer = get_class(str(OmegaConf.select(cfg, "optimizer._target_")))
    except Exception:  # (the job itself says what is wrong when it runs)
        return None, "its model or optimizer class cannot be imported"
    if not getattr(model, "vectorizable", False):
        return None, f"its model ({model.__name__}) does not say it can be vectorized"
    if cfg.get("ckpt_path"):
        return None, "it starts from a checkpoint (ckpt_path)"
    trainer = cfg.trainer
    if "ddp" in str(trainer.get("strategy", "")) or str(trainer.get("devices", 1)) not in ("1", "auto"):
        return None, "it trains on several devices (trainer.strategy/devices)"
    for key, plain in (("accumulate_grad_batches", 1), ("val_check_interval", 1.0)):
        if trainer.get(key) not in (None, plain):
            return None, f"trainer.{key} is not vectorized"
    step = inspect.signature(optimizer.step).parameters.get("closure")
    if step is not None and step.default is inspect.Parameter.empty:
        return None, f"optimizer {optimizer.__name__} needs a closure (it evaluates the loss itself)"
    if "sparse" in optimizer.__name__.lower():
        return None, f"optimizer {optimizer.__name__} takes sparse gradients"
    scheduler = cfg.get("scheduler") or {}
    if "ReduceLROnPlateau" in str(scheduler.get("_target_", "")) and scheduler.get("interval") == "step":
        return None, "ReduceLROnPlateau stepped per batch (scheduler.interval=step) is not vectorized"
    if (why := _callbacks_alone(cfg)) is not None:
        return None, why
    shared = OmegaConf.masked_copy(cfg, [k for k in cfg if k not in (*MEMBER_KEYS, "hydra")])
    with open_dict(shared):
        for key in MEMBER_TRAINER_KEYS:
            shared.trainer.pop(key, None)
    return OmegaConf.to_yaml(shared, resolve=False), ""


def _callbacks_alone(cfg: DictConfig) -> str | None:
    """Why the job's callbacks keep it out of a group, or None."""
    from hydra.utils import get_class
    from pytorch_lightning.callbacks import ModelCheckpoint

    from lightsweep.vectorized.members import PER_MEMBER_CALLBACKS

    for name, callback in (cfg.get("callbacks") or {}).items():
        if not callback or "_target_" not in callback:
            continue
        try:
            cls = get_class(str(callback._target_))
        except Exception:
            return f"callbacks.{name} cannot be imported"
        if not issubclass(cls, PER_MEMBER_CALLBACKS):
            return f"callbacks.{name} ({cls.__name__}) is a callback for one model"
        monitor = callback.get("monitor")
        if monitor is not None and monitor not in MEMBER_METRICS:
            return f"callbacks.{name}.monitor={monitor}: a member's metrics are {', '.join(MEMBER_METRICS)}"
        if issubclass(cls, ModelCheckpoint) and (
            callback.get("every_n_train_steps") or callback.get("train_time_interval")
        ):
            return f"callbacks.{name} saves within epochs (every_n_train_steps/train_time_interval)"
    return None


def prepare(cfg: DictConfig) -> Member | dict:
    """In the job's Hydra context: validate, open the MLflow child run and log its config (as train()),
    then build the member's module, callbacks and logger as `lightsweep.build` builds a run's. A resumed
    sweep's job that had finished returns its run's metrics instead (it does not train again)."""
    from lightsweep.build import build_callbacks, build_logger, build_model
    from lightsweep.sweeps.context import current_job
    from lightsweep.tracking.run import end_run_for
    from lightsweep.tracking.setup import log_config, open_run
    from lightsweep.train import check_config, kept, with_checkpoint_dir

    job = current_job()
    sweep = job.sweep if job is not None and job.sweep is not None and job.sweep.tracked else None
    with interrupts.held() as creating:
        run = open_run(cfg, job, sweep)
        if run is not None and run.kept is not None:
            creating.release()
            return kept(run)
        try:
            creating.release()
            check_config(cfg, True)
            if run is not None and run.resume is None:
                log_config(run.client, run.run_id, cfg)
            # Resolved now: `${hydra:...}` values (output dir, choices) exist only inside this job's context.
            resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
            if run is not None and run.resume is not None and run.resume.checkpoint_dir is not None:
                # its checkpoints go on in their folder: its callbacks' restored state names files there
                resolved = with_checkpoint_dir(resolved, str(run.resume.checkpoint_dir))
            datamodule, module = build_model(resolved)  # seeded as its job: the same initial weights
            callbacks = build_callbacks(resolved, tested=bool(resolved.get("test", True)))
            logger = build_logger(resolved, run)
        except BaseException as err:
            if run is not None:
                end_run_for(run.client, run.run_id, err)
            raise
    num = job.num if job is not None else 0
    return Member(resolved, run, num, module, datamodule, callbacks, logger)


def train_group(members: list[Member], group: str, finish_later: bool = False) -> list[dict]:
    """Train `members` as one model; each member's metrics (as `train()` returns them) or {"failed": ...}.

    Each member's run ends once its figures are drawn and stored; `finish_later`: that happens at the
    drawer's `poll()`/`drain()` (lightsweep.plots.drawer: the launcher's, while the next group trains),
    else before this returns."""
    from lightsweep.plots.drawer import workers
    from lightsweep.startup import resume_gc
    from lightsweep.tracking.run import end_run_for

    resume_gc()  # the CLI paused the collector for its imports; a group builds data, models, a trainer
    started = time.perf_counter()
    try:
        results = _fit_and_test(members, group)
        if not finish_later:
            workers().drain()
    except BaseException as err:
        for member in members:
            if member.run is not None:
                end_run_for(member.run.client, member.run.run_id, err)
        raise
    finally:
        # The group's trainer, module and data hold one another (reference cycles): free them before
        # the next group loads its own, so that a sweep of many groups needs one group's memory.
        gc.collect()
    log.info("vectorized group %s: %d members in %.1f s", group, len(members), time.perf_counter() - started)
    return results


def _fit_and_test(members: list[Member], group: str) -> list[dict]:
    from lightsweep.build import flush_denormal
    from lightsweep.callbacks import RunArtifacts
    from lightsweep.plots.drawer import workers
    from lightsweep.vectorized.module import GroupData, StackedClassifier

    # Sorted by seed: each seed group's members are one slice of the stacked weights.
    order = sorted(range(len(members)), key=lambda i: int(members[i].cfg.seed))
    members = [members[i] for i in order]
    cfg = members[0].cfg
    flush_denormal(cfg.get("flush_denormal", False))  # before the group computes (see build.flush_denormal)
    seeds = sorted({int(m.cfg.seed) for m in members})
    folder = Path(str(cfg.paths.output_dir)).parent / f"group-{group}"
    resume_from = _group_checkpoint(members)
    datamodule = members[0].datamodule
    drawer = workers()  # the members' figures draw in worker processes, several at once
    for member in members:
        member.datamodule = datamodule  # one data set for all (each job built its own, unloaded)
        for callback in member.callbacks:
            if isinstance(callback, RunArtifacts):
                callback.drawer = drawer
        if member.run is not None:
            tags = {"lightsweep.vectorized": group, GROUP_CHECKPOINT_TAG: str(folder / "last.ckpt")}
            for key, value in tags.items():
                member.run.client.set_tag(member.run.run_id, key, value)
    module = StackedClassifier(members, [seeds.index(int(m.cfg.seed)) for m in members])
    data = GroupData(datamodule, seeds)
    trainer = _group_trainer(cfg, members, folder)
    started = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=resume_from, weights_only=True)
    interrupts.check()
    if trainer.interrupted:
        raise KeyboardInterrupt
    results = _test(members, module, data, trainer, cfg, drawer)
    log.info("vectorized group %s: fit and test in %.1f s", group, time.perf_counter() - started)
    in_job_order = [{}] * len(results)
    for position, i in enumerate(order):
        in_job_order[i] = results[position]
    return in_job_order


def _group_checkpoint(members: list[Member]) -> str | None:
    """The group's own last checkpoint when every member continues an interrupted run of this group
    (a resumed sweep), else None: the group starts from the beginning."""
    from lightsweep.resume import check_own_folder, load_checkpoint
    from lightsweep.vectorized.module import GROUP_STATE

    if not members or not all(m.run is not None and m.run.resume is not None for m in members):
        return None
    paths = {m.run.client.get_run(m.run.run_id).data.tags.get(GROUP_CHECKPOINT_TAG) for m in members}
    path = Path(paths.pop()) if len(paths) == 1 and None not in paths else None
    if path is None or not path.is_file():
        log.info("vectorized group: its members' runs continue from the beginning (no checkpoint of this group)")
        return None
    # (a path from the tracking store: loaded only inside this sweep's outputs)
    check_own_folder(members[0].run.run_id, str(path.parent), [members[0].cfg.paths.log_dir])
    saved = [state["label"] for state in load_checkpoint(path).get(GROUP_STATE, [])]
    if saved != [m.label for m in members]:
        log.info("vectorized group: %s was saved for other members; its members start again", path)
        return None
    log.info("vectorized group: continues from %s", path)
    return str(path)


def _group_trainer(cfg: DictConfig, members: list[Member], folder: Path):
    """The group's Trainer: its job's trainer settings, the callbacks that run once (progress bar,
    summary, signals), its random state and its own last checkpoint (what the group resumes from)."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    from lightsweep.build import cluster_plugins, instantiate
    from lightsweep.callbacks import RandomState
    from lightsweep.vectorized.members import ONCE_PER_GROUP
    from lightsweep.vectorized.module import FinishDrawnRuns, MembersOnException

    callbacks = [c for c in members[0].callbacks if isinstance(c, ONCE_PER_GROUP)]
    callbacks += [
        RandomState(),
        MembersOnException(),
        FinishDrawnRuns(),
        # every epoch's end, over the one before (a run's own `save_last` follows its best checkpoint only)
        ModelCheckpoint(dirpath=str(folder), filename="last", monitor=None, save_top_k=1, save_on_train_epoch_end=True),
    ]
    clipping = dict.fromkeys(MEMBER_TRAINER_KEYS)  # each member clips its own gradients (StackedClassifier)
    return instantiate(cfg, "trainer", callbacks=callbacks, logger=False, **clipping, **cluster_plugins())


def _test(members: list[Member], module, data, trainer, cfg: DictConfig, drawer) -> list[dict]:
    """Each member's outcome, as `train()` gives a run's: its fit metrics, its best weights tested (not
    when it diverged); its run is ended by the run lifecycle once its figures are stored (`drawer.then`)."""
    from lightsweep.callbacks import RunArtifacts
    from lightsweep.train import diverged_error, diverged_key, scalars

    tested = bool(cfg.get("test", True))
    for member in members:
        member.tested = tested and diverged_key(scalars(member.fit_metrics)) is None
    if any(member.tested for member in members):
        trainer.test(module, datamodule=data, verbose=False)
        interrupts.check()
    results = []
    for member in members:
        metrics = scalars(member.fit_metrics)
        if member.tested:
            metrics.update({k: float(member.metrics[k]) for k in ("test/loss", "test/acc")})
        diverged = diverged_key(metrics)
        error = diverged_error(member.cfg, diverged) if diverged is not None else None
        if error is None and member.run is not None:
            metrics["run_id"] = member.run.run_id
        results.append({"failed": str(error)} if error is not None else metrics)
        artifacts = next((c for c in member.callbacks if isinstance(c, RunArtifacts)), None)
        drawer.then(artifacts, [], functools.partial(_end, member, error, drawer.error, artifacts))
    return results


def _end(member: Member, error: BaseException | None, failures, artifacts) -> None:
    """End the member's run, once its figures are stored: FINISHED, or FAILED (diverged, or a figure or
    upload that failed), by the run lifecycle; its logger's queued metrics first."""
    from lightsweep.tracking.run import end_run, end_run_for

    if member.logger:
        member.logger.finalize("success")
    if member.run is None:
        return
    error = failures(artifacts) or error
    if error is not None:
        end_run_for(member.run.client, member.run.run_id, error)
    else:
        end_run(member.run.client, member.run.run_id, "FINISHED")
