"""A vectorized group of sweep jobs: which jobs can train together, and training them.

`group_key(cfg)` says whether a job can join a group (and with whom: equal keys); `prepare(cfg)` runs
inside the job's own Hydra context (its output dir, `.hydra/` files, HydraConfig): it validates the
config and opens the job's MLflow child run, as `train()` does. `train_group(members)` then trains the
prepared members as one `StackedClassifier` and gives each member's run what a separate job's gets:
per-epoch and test metrics, plots, a single-model best checkpoint, and its final status.
"""

from __future__ import annotations

import gc
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lightsweep import interrupts

log = logging.getLogger(__name__)

# What members of one group may differ in: each member's own optimizer, schedule and seed.
MEMBER_KEYS = ("optimizer", "scheduler", "seed", "run_name", "tags", "paths")
MODELS = (
    "lightsweep.models.SoftmaxRegression",
    "lightsweep.models.LogisticRegression",
    "lightsweep.models.MLPClassifier",
)
# The default callbacks, which the group reproduces per member; any other callback sees one model.
KNOWN_CALLBACKS = {
    "model_checkpoint",
    "interrupt_checkpoint",
    "early_stopping",
    "stop_on_divergence",
    "model_summary",
    "progress_bar",
}


def group_key(cfg: DictConfig) -> tuple[str | None, str]:
    """(key, why): jobs with the same key train together; None runs the job alone, for the reason given."""
    if str(OmegaConf.select(cfg, "model._target_")) not in MODELS:
        return None, "its model is not one of lightsweep's (softmax, logistic, mlp)"
    if cfg.get("resume") or cfg.get("ckpt_path"):
        return None, "it continues a checkpoint (resume/ckpt_path)"
    trainer = cfg.trainer
    if "ddp" in str(trainer.get("strategy", "")) or str(trainer.get("devices", 1)) not in ("1", "auto"):
        return None, "it trains on several devices (trainer.strategy/devices)"
    for key, plain in (("accumulate_grad_batches", 1), ("gradient_clip_val", None), ("val_check_interval", None)):
        if trainer.get(key, plain) not in (plain, 1.0 if key == "val_check_interval" else plain):
            return None, f"trainer.{key} is not vectorized"
    for name in ("model_checkpoint", "early_stopping"):
        monitor = OmegaConf.select(cfg, f"callbacks.{name}.monitor")
        if monitor is not None and monitor not in ("val/acc", "val/loss"):
            return None, f"callbacks.{name}.monitor={monitor}: members are compared on val/acc or val/loss"
    extra = sorted(k for k, c in (cfg.get("callbacks") or {}).items() if c and k not in KNOWN_CALLBACKS)
    if extra:
        return None, f"callbacks.{extra[0]} is a callback for one model"
    if cfg.optimizer.get("_target_", "").rsplit(".", 1)[-1] not in ("SGD", "Adam", "AdamW", "Adagrad", "RMSprop"):
        return None, f"optimizer {cfg.optimizer.get('_target_')} has no vectorized update rule"
    if cfg.get("scheduler") and cfg.scheduler.get("_target_", "").rsplit(".", 1)[-1] not in (
        "StepLR",
        "CosineAnnealingLR",
    ):
        return None, f"scheduler {cfg.scheduler.get('_target_')} is not vectorized"
    shared = OmegaConf.masked_copy(cfg, [k for k in cfg if k not in (*MEMBER_KEYS, "hydra")])
    return OmegaConf.to_yaml(shared, resolve=False), ""


@dataclass
class Member:
    """One prepared job of a group: its resolved config, its run (None: not tracked) and its number."""

    cfg: DictConfig
    run: object
    num: int


def prepare(cfg: DictConfig) -> Member:
    """In the job's Hydra context: validate, open the MLflow child run and log its config (as train())."""
    from lightsweep.sweeps.context import current_job
    from lightsweep.tracking.run import end_run_for
    from lightsweep.tracking.setup import log_config, open_run
    from lightsweep.train import check_config

    job = current_job()
    sweep = job.sweep if job is not None and job.sweep is not None and job.sweep.tracked else None
    with interrupts.held() as creating:
        run = open_run(cfg, job, sweep)
        try:
            creating.release()
            check_config(cfg, True)
            if run is not None:
                log_config(run.client, run.run_id, cfg)
        except BaseException as err:
            if run is not None:
                end_run_for(run.client, run.run_id, err)
            raise
    # Resolved now: `${hydra:...}` values (output dir, choices) exist only inside this job's context.
    resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    return Member(cfg=resolved, run=run, num=job.num if job is not None else 0)


def train_group(members: list[Member], group: str) -> list[dict]:
    """Train `members` as one model; each member's metrics (as `train()` returns them) or {"failed": ...}."""
    from lightsweep.startup import resume_gc
    from lightsweep.tracking.run import end_run_for

    resume_gc()  # the CLI paused the collector for its imports; a group builds data, models, a trainer
    started = time.perf_counter()
    try:
        results = _fit_and_test(members, group)
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
    from lightsweep.build import build_model, flush_denormal, instantiate
    from lightsweep.callbacks import SignalCheck
    from lightsweep.vectorized.module import GroupData, StackedClassifier, Stopping
    from lightsweep.vectorized.optim import RULES, member_spec, resolve_target, schedule_spec

    # Sorted by seed, then update rule: each seed group's members are one slice of the stacked weights,
    # and each rule's members a regular pattern that the optimizer updates as a view.
    rules = [RULES[resolve_target(m.cfg.optimizer._target_)] for m in members]
    order = sorted(range(len(members)), key=lambda i: (int(members[i].cfg.seed), rules[i]))
    members = [members[i] for i in order]
    cfg = members[0].cfg
    flush_denormal(cfg.get("flush_denormal", False))  # before the group computes (see build.flush_denormal)
    singles = []
    for member in members:
        datamodule, model = build_model(member.cfg)  # seeded as its job: the same initial weights
        singles.append(model)
    seeds = sorted({int(m.cfg.seed) for m in members})
    stopping = Stopping(patience=sys.maxsize)
    early = OmegaConf.select(cfg, "callbacks.early_stopping")
    if early:
        stopping = Stopping(
            str(early.monitor), str(early.get("mode", "min")), int(early.patience), float(early.get("min_delta", 0.0))
        )
    checkpoint = OmegaConf.select(cfg, "callbacks.model_checkpoint")
    best_by = (str(checkpoint.monitor), str(checkpoint.get("mode", "min"))) if checkpoint else ("val/acc", "max")
    module = StackedClassifier(
        singles[0],
        [{k: v.detach() for k, v in model.named_parameters()} for model in singles],
        [member_spec(m.cfg.optimizer._target_, _kwargs(m.cfg.optimizer)) for m in members],
        [
            schedule_spec(m.cfg.scheduler._target_, _kwargs(m.cfg.scheduler)) if m.cfg.get("scheduler") else None
            for m in members
        ],
        [seeds.index(int(m.cfg.seed)) for m in members],
        stopping,
        int(cfg.trainer.get("log_every_n_steps", 50) or 50),
        best_by,
    )
    data = GroupData(datamodule, seeds)
    trainer = instantiate(
        cfg,
        "trainer",
        callbacks=[SignalCheck()],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    started = time.perf_counter()
    trainer.fit(module, datamodule=data)
    interrupts.check()
    if trainer.interrupted:
        raise KeyboardInterrupt
    tested = bool(cfg.get("test", True))
    test_loss = test_acc = None
    if tested:
        trainer.test(module, datamodule=data, verbose=False)
        interrupts.check()
        test_loss, test_acc = module.test_results
    log.info("vectorized group %s: fit and test in %.1f s", group, time.perf_counter() - started)
    steps_per_epoch = trainer.num_training_batches
    results = []
    for m, (member, single) in enumerate(zip(members, singles)):
        history = module.history[m]
        metrics = {key: points[-1][1] for key, points in history.epochs.items() if points}
        if tested and history.diverged_at is None:
            metrics.update({"test/loss": test_loss[m], "test/acc": test_acc[m]})
        results.append(_finish(member, single, module, m, metrics, data, steps_per_epoch, group))
    in_job_order = [{}] * len(results)
    for position, i in enumerate(order):
        in_job_order[i] = results[position]
    return in_job_order


def _kwargs(node) -> dict:
    return {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k not in ("_target_", "_partial_")}


def _finish(member: Member, single, module, m: int, metrics: dict, data, steps_per_epoch: int, group: str) -> dict:
    """Member m's run: metrics, checkpoint, plots, tags, final status. Returns what `train()` returns."""
    from lightsweep import plots
    from lightsweep.callbacks.artifacts import model_plots
    from lightsweep.tracking.models import InputSpec, log_model, logs_own_model
    from lightsweep.tracking.run import end_run

    history = module.history[m]
    out = Path(str(member.cfg.paths.output_dir))
    single.to(module.weights[0].dtype)  # the precision it trained in (as a single run's checkpoint)
    single.load_state_dict(module.member_state(m, best=True), strict=False)
    spec = InputSpec.from_training(data.datamodule, single)
    paths = [plots.learning_curves(history.epochs, out / "plots" / "learning_curves.png")]
    checkpoint = None
    if history.best_epoch is not None:
        checkpoint = _save_checkpoint(single, history, out, steps_per_epoch, spec)
    if "test/acc" in metrics and hasattr(module, "confusion"):
        names = data.datamodule.class_names
        paths.append(plots.confusion_matrix(module.confusion[m].cpu(), names, out / "plots" / "confusion_matrix.png"))
    paths += model_plots(data.datamodule, single, out / "plots")
    diverged = history.diverged_at is not None
    reason = (
        f"training diverged (non-finite train/loss at epoch {history.diverged_at}): lower optimizer.lr "
        f"(now {member.cfg.optimizer.lr}) or add weight decay"
    )
    if member.run is not None:
        client, run_id = member.run.client, member.run.run_id
        _log_metrics(client, run_id, history, metrics, steps_per_epoch)
        for path in paths:
            client.log_artifact(run_id, str(path), "plots")
        if checkpoint is not None:
            client.log_artifact(run_id, str(checkpoint), "checkpoints")
        client.set_tag(run_id, "lightsweep.vectorized", group)
        if not diverged and checkpoint is not None and logs_own_model(member.cfg, in_sweep=True):  # log_models=all
            log_model(client, run_id, single.net, spec)
        if diverged:
            client.set_tag(run_id, "lightsweep.diverged", "true")
            end_run(client, run_id, "FAILED", reason)
        else:
            end_run(client, run_id, "FINISHED")
        metrics["run_id"] = run_id
    return {"failed": reason} if diverged else metrics


def _save_checkpoint(single, history, out: Path, steps_per_epoch: int, spec) -> Path:
    """An ordinary single-model checkpoint of the member's best weights (`load_from_checkpoint` loads it)."""
    import pytorch_lightning as pl
    import torch

    from lightsweep.tracking.models import SPEC_STATE

    epoch = history.best_epoch
    acc = dict(history.epochs.get("val/acc", [])).get(epoch, math.nan)
    path = out / "checkpoints" / f"epoch{epoch:03d}-acc{acc:.4f}.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "pytorch-lightning_version": pl.__version__,
            "epoch": epoch,
            "global_step": (epoch + 1) * steps_per_epoch,
            "state_dict": {k: v.detach().cpu() for k, v in single.state_dict().items()},
            "hyper_parameters": dict(single.hparams),
            "callbacks": {SPEC_STATE: spec.state()},
        },
        path,
    )
    return path


def _log_metrics(client, run_id: str, history, metrics: dict, steps_per_epoch: int) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)

    # Each epoch's points carry the time the group reached them: the report's "seconds to" stay honest.
    def at(step: int) -> int:
        return history.times.get(max(step - 1, 0) // steps_per_epoch, now)

    points = [Metric("train/loss", v, at(s), s) for s, v in history.steps]
    for key, values in history.epochs.items():
        points += [Metric(key, v, history.times.get(e, now), (e + 1) * steps_per_epoch) for e, v in values]
    last = max((e for values in history.epochs.values() for e, _ in values), default=0)
    points += [
        Metric(k, metrics[k], now, (last + 1) * steps_per_epoch) for k in ("test/loss", "test/acc") if k in metrics
    ]
    for start in range(0, len(points), 1000):
        with interrupts.deferred():
            client.log_batch(run_id, metrics=points[start : start + 1000])
