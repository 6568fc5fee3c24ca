"""The optimizer suite (`experiment=optimizer_suite`): MLCommons AlgoPerf's protocol on lightsweep's workloads.

A workload is a data set, a model, a target validation accuracy and a budget in epochs (the `suite`
config group: conf/suite/*.yaml). A training algorithm is an optimizer preset (conf/optimizer/<name>.yaml)
with its schedule and its own search space (`optimizer.search_space`). The sweeper
(`hydra/sweeper=optimizer_suite`, src/hydra_plugins/lightsweep_suite) runs, per workload:

- **timing runs**: each optimizer alone for `suite.timing_steps` steps at its defaults, its seconds per
  step measured in its own run (`lightsweep.callbacks.StepTimer`): a vectorized group's steps are every
  member's at once, which would hide a costly optimizer;
- **trials**: per optimizer and study, `suite.trials` quasirandom trials of the optimizer's search space
  (an Optuna study with a QMC sampler seeded by the study's number), trained as vectorized groups; each
  stops at the target (EarlyStopping's `stopping_threshold`), and `TargetPruner` stops those that can no
  longer be their study's fastest.

The report (lightsweep.sweeps.suite_report) scores them as AlgoPerf does (lightsweep.sweeps.scoring).
This module holds the plan: the suite's settings checked, each job's overrides, the pruner.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf
from optuna.pruners import BasePruner

from lightsweep.errors import LightsweepError

# MLflow tags of the suite's runs (set through `+tags.<name>=`); `stage` is the report's field
STAGE, WORKLOAD, STUDY, TRIAL, TARGET = "stage", "suite_workload", "suite_study", "suite_trial", "suite_target"
TIMING, TRIALS = "timing", "trial"  # the stages
TARGET_ATTR = "lightsweep.target"  # the study's user attribute: the validation accuracy its trials aim at
MONITOR = "val/acc"  # the validation metric of every target
PRUNER = "lightsweep.sweeps.suite.TargetPruner"


@dataclass
class Workload:
    """A data set and a model (`overrides`), the validation accuracy to reach and the budget in epochs."""

    name: str
    overrides: list[str]
    target: float
    epochs: int


@dataclass
class Algorithm:
    """An optimizer preset, its own schedule and its search space (`optimizer.search_space`, read as
    lightsweep's Optuna sweeper reads a search: lightsweep.sweeps.study)."""

    name: str
    search: object  # lightsweep.sweeps.study.Search
    # the preset's own `scheduler` choice (nadamw: warmup_cosine_steps), else none: a training algorithm
    # brings its schedule, the workload's model does not (an MLP's default cosine is left out)
    scheduler: str = "none"


@dataclass
class SuitePlan:
    """The suite's settings, checked (`from_config`)."""

    workloads: list[Workload]
    algorithms: list[Algorithm]
    trials: int
    studies: int
    timing_steps: int
    seed: int
    arguments: list[str] = field(default_factory=list)  # the command line's overrides, for every job

    @classmethod
    def from_config(cls, config: DictConfig, arguments: list[str], compose) -> SuitePlan:
        """From the sweep's config (its `suite` node and `seed`) and task overrides; `compose(overrides)`
        composes a job's config (each optimizer's search space is read from its preset). Bad input is
        refused in one line that names the key."""
        from lightsweep.overrides import swept_keys

        suite = config.get("suite")
        if not suite:
            raise LightsweepError("the optimizer suite needs its settings: add experiment=optimizer_suite (suite=...)")
        if swept := swept_keys(list(arguments)):
            raise LightsweepError(
                f"the optimizer suite runs its own trials; drop the sweep over {', '.join(swept)} "
                "(tune in the presets' search_space)"
            )
        counts = {}
        for key, low in (("trials", 1), ("studies", 1), ("timing_steps", 11)):
            value = suite.get(key)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise LightsweepError(f"suite.{key}={value} must be a whole number >= {low}")
            counts[key] = value
        workloads = [workload(name, node) for name, node in (suite.get("workloads") or {}).items()]
        if not workloads:
            raise LightsweepError("suite.workloads is empty: give at least one (data, model, target, epochs)")
        names = suite.get("optimizers")
        if not OmegaConf.is_list(names) or not names or not all(isinstance(n, str) for n in names):
            raise LightsweepError(f"suite.optimizers must be a list of optimizer presets, got {names}")
        arguments = [a for a in arguments if not a.split("=", 1)[0].lstrip("+~").startswith("suite")]
        algorithms = [algorithm(str(name), compose([*arguments, f"optimizer={name}"])) for name in names]
        return cls(workloads, algorithms, seed=int(config.get("seed", 0)), arguments=arguments, **counts)

    # --- the jobs ---------------------------------------------------------------------------------
    def common(self, workload: Workload, algorithm: Algorithm, study: int | None, stage: str) -> list[str]:
        return [
            *self.arguments,
            "~suite",
            *workload.overrides,
            f"optimizer={algorithm.name}",
            f"scheduler={algorithm.scheduler}",
            f"seed={self.seed + (study or 0)}",
            "test=false",
            "log_models=none",
            "plots=false",
            "callbacks.model_checkpoint=null",
            f"+tags.{STAGE}={stage}",
            f"+tags.{WORKLOAD}={workload.name}",
            f"+tags.{TARGET}={workload.target}",
        ]

    def timing_overrides(self, workload: Workload, algorithm: Algorithm) -> list[str]:
        """A run of the optimizer alone at its defaults for `timing_steps` steps, no validation: its
        seconds per step (StepTimer, a callback for one model, so it never joins a group)."""
        return [
            *self.common(workload, algorithm, None, TIMING),
            f"++trainer.max_steps={self.timing_steps}",
            f"trainer.max_epochs={max(workload.epochs, self.timing_steps)}",
            "trainer.limit_val_batches=0",
            "callbacks.early_stopping=null",
            "+callbacks.step_timer._target_=lightsweep.callbacks.StepTimer",
            "threads=1",  # comparable and steady times, also on a machine that other work shares
            f"run_name={workload.name}-{algorithm.name}-timing",
        ]

    def trial_overrides(self, workload: Workload, algorithm: Algorithm, study: int, trial: int, params: dict):
        """A trial: the workload, the optimizer with the trial's sampled values, the study's seed; it
        stops at the target (or after the budget), and reports val/acc to its Optuna trial every epoch."""
        return [
            *self.common(workload, algorithm, study, TRIALS),
            *algorithm.search.job_overrides(params),
            f"trainer.max_epochs={workload.epochs}",
            f"callbacks.early_stopping.monitor={MONITOR}",
            "callbacks.early_stopping.mode=max",
            f"++callbacks.early_stopping.stopping_threshold={workload.target}",
            f"optimized_metric={MONITOR}",
            "objective_on_failure=0.0",
            f"+tags.{STUDY}={study}",
            f"+tags.{TRIAL}={trial}",
            f"run_name={workload.name}-{algorithm.name}-s{study}-t{trial}",
        ]

    def study_name(self, sweep_id: str, workload: Workload, name: str, study: int) -> str:
        return f"suite-{sweep_id}-{workload.name}-{name}-s{study}"


def workload(name: str, node) -> Workload:
    key = f"suite.workloads.{name}"
    if not OmegaConf.is_dict(node):
        raise LightsweepError(f"{key} must be a mapping of overrides, target and epochs, got {node}")
    overrides = node.get("overrides")
    if not OmegaConf.is_list(overrides) or not all(isinstance(o, str) and "=" in o for o in overrides):
        raise LightsweepError(f"{key}.overrides must be a list of overrides (data=..., model=...), got {overrides}")
    target, epochs = node.get("target"), node.get("epochs")
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 1:
        raise LightsweepError(f"{key}.target={target} must be a validation accuracy in (0, 1]")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise LightsweepError(f"{key}.epochs={epochs} must be a whole number >= 1")
    return Workload(str(name), [str(o) for o in overrides], float(target), int(epochs))


def algorithm(name: str, config: DictConfig) -> Algorithm:
    """The optimizer preset's search space (`optimizer.search_space` in conf/optimizer/<name>.yaml)."""
    from lightsweep.sweeps.study import Search, parse_search_space

    space = OmegaConf.select(config, "optimizer.search_space")
    if not space:
        raise LightsweepError(
            f"suite.optimizers: optimizer={name} has no search_space (conf/optimizer/{name}.yaml): "
            "declare one beside the preset, e.g. search_space: {optimizer.lr: tag(log, interval(1e-4, 1e-1))}"
        )
    params = OmegaConf.to_container(space, resolve=False)
    parsed = parse_search_space(params, [], source=f"optimizer={name}: optimizer.search_space")
    scheduler = str(OmegaConf.select(config, "hydra.runtime.choices.scheduler", default="default"))
    return Algorithm(name, Search(parsed, [MONITOR], ["maximize"]), "none" if scheduler == "default" else scheduler)


def reached_at(values: dict, target: float) -> int | None:
    """The first step (epoch) whose value reached the target, else None."""
    hits = [step for step, value in values.items() if math.isfinite(value) and value >= target]
    return min(hits) if hits else None


class TargetPruner(BasePruner):
    """Prunes a trial that can no longer be the fastest of its study to the target: another trial of the
    study reached the target (`TARGET_ATTR`) at an epoch no later than this trial's last report, which
    is below the target. A study's time on a workload is its fastest trial's, and every trial of a study
    steps at the same cost (one optimizer, one workload), so the pruned trial's time could not count."""

    def prune(self, study, trial) -> bool:
        step = trial.last_step
        target = study.user_attrs.get(TARGET_ATTR)
        if step is None or target is None or reached_at(trial.intermediate_values, target) is not None:
            return False
        for other in study.get_trials(deepcopy=False):
            if other.number != trial.number:
                first = reached_at(other.intermediate_values, target)
                if first is not None and first <= step:
                    return True
        return False
