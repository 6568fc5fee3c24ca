"""`hydra/sweeper=optimizer_suite`: MLCommons AlgoPerf's external-tuning protocol over lightsweep's workloads.

Per workload (`suite.workloads`): each optimizer (`suite.optimizers`) runs alone for its seconds per step
(timing runs); then, per optimizer and study (`suite.studies`), `suite.trials` quasirandom trials of the
optimizer's search space, asked from an Optuna study (QMC sampler seeded by the study's number) and
launched together, so that a vectorized launcher trains them as groups; each trial reports val/acc to its
trial every epoch and stops at the target or when `TargetPruner` prunes it, and Optuna is told each
outcome. The sweep's report scores the runs (lightsweep.sweeps.suite_report). See docs/suite.md.
"""

# No `from __future__ import annotations`: Hydra's plugin scan executes this module outside
# sys.modules, where dataclasses cannot resolve string annotations.
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig

log = logging.getLogger(__name__)


@dataclass
class OptimizerSuiteSweeperConf:
    _target_: str = "hydra_plugins.lightsweep_suite.optimizer_suite_sweeper.OptimizerSuiteSweeper"
    # the trials' Optuna studies: a SQLAlchemy URL; null: optuna.db next to the MLflow store
    storage: Optional[str] = None
    # what the jobs of this sweeper vary (names their job dirs)
    varies: List[str] = field(default_factory=lambda: ["run_name"])


ConfigStore.instance().store(
    group="hydra/sweeper", name="optimizer_suite", node=OptimizerSuiteSweeperConf, provider="lightsweep"
)


def plan_of(config: DictConfig):
    """The suite's plan from the sweep's config; each optimizer's search space is read from its preset, in a
    job's config composed with Hydra's compose API (inside the app: its config path and search path)."""
    from hydra import compose

    from lightsweep.sweeps.suite import SuitePlan

    def composed(overrides: List[str]) -> DictConfig:
        return compose(config_name=config.hydra.job.config_name, overrides=list(overrides), return_hydra_config=True)

    return SuitePlan.from_config(config, [str(o) for o in config.hydra.overrides.task], composed)


class OptimizerSuiteSweeper(Sweeper):
    def __init__(self, storage: Optional[str] = None, varies: Optional[List[str]] = None) -> None:
        self.storage_url = storage
        self.config: Optional[DictConfig] = None
        self.launcher: Any = None
        self.job_idx = 0

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    @classmethod
    def continued_parent_run(cls, config: DictConfig) -> Optional[str]:
        """A suite always starts a new parent run; its settings are checked here, before that run exists
        (MLflowSweepCallback asks), so that bad input leaves nothing behind."""
        plan_of(config)
        return None

    def sweep(self, arguments: List[str]) -> Any:
        from lightsweep.errors import LightsweepError
        from lightsweep.sweeps.study import default_storage, open_storage

        assert self.config is not None
        try:
            plan = plan_of(self.config)
            url = self.storage_url or default_storage(self.config)
            if url is None:
                raise LightsweepError("hydra.sweeper.storage: the trials report to an Optuna database; give its URL")
            storage = open_storage(url, key="hydra.sweeper.storage")
        except LightsweepError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        self.record(plan, sweep_dir)
        returns = []
        for workload in plan.workloads:
            log.info(
                "Optimizer suite, %s: timing %d optimizers alone (%d steps each)",
                workload.name,
                len(plan.algorithms),
                plan.timing_steps,
            )
            returns.append(self.launch([plan.timing_overrides(workload, a) for a in plan.algorithms]))
            returns.append(self.run_trials(plan, workload, storage, url, sweep_dir))
        return returns

    def launch(self, overrides: List[List[str]]) -> Any:
        returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
        self.job_idx += len(overrides)
        return returns

    def run_trials(self, plan: Any, workload: Any, storage: Any, url: str, sweep_dir: Path) -> Any:
        """Every study's trials of one workload, asked, launched as one batch and told."""
        import optuna

        from lightsweep import interrupts
        from lightsweep.sweeps.study import SEARCH_ATTR, TrialHandoff, experimental_ok
        from lightsweep.sweeps.suite import MONITOR, PRUNER, TARGET_ATTR, TargetPruner

        sweep_id = sweep_dir.name
        asked, overrides = [], []
        handoff = TrialHandoff("", url, MONITOR, {"_target_": PRUNER})
        with experimental_ok():
            for study_number in range(plan.studies):
                for algorithm in plan.algorithms:
                    name = plan.study_name(sweep_id, workload, algorithm.name, study_number)
                    study = optuna.create_study(
                        study_name=name,
                        storage=storage,
                        sampler=optuna.samplers.QMCSampler(seed=study_number, scramble=True),
                        pruner=TargetPruner(),
                        direction="maximize",
                    )
                    study.set_user_attr(TARGET_ATTR, workload.target)
                    study.set_user_attr(SEARCH_ATTR, algorithm.search.record())
                    for _ in range(plan.trials):
                        trial = study.ask(fixed_distributions=algorithm.search.space.distributions)
                        job = str(self.job_idx + len(asked))
                        handoff.trials[job], handoff.studies[job] = trial.number, name
                        asked.append((study, trial))
                        overrides.append(
                            plan.trial_overrides(workload, algorithm, study_number, trial.number, trial.params)
                        )
        handoff.write(sweep_dir)
        log.info(
            "Optimizer suite, %s: %d trials (%d optimizers x %d studies x %d), target val/acc %g in %d epochs",
            workload.name,
            len(asked),
            len(plan.algorithms),
            plan.studies,
            plan.trials,
            workload.target,
            workload.epochs,
        )
        try:
            returns = self.launch(overrides)
        except BaseException:
            with interrupts.deferred():  # their studies are this sweep's alone: no one runs them again
                for study, trial in asked:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            raise
        for (study, trial), ret in zip(asked, returns):
            tell(storage, study, trial, ret)
        return returns

    def record(self, plan: Any, sweep_dir: Path) -> None:
        """The suite's settings as params of the sweep's parent run (when tracked)."""
        from lightsweep.sweeps.context import SweepContext

        context = SweepContext.read(sweep_dir)
        if context is None or not context.tracked:
            return
        from mlflow.entities import Param

        from lightsweep.tracking.store import open_store

        params = {
            "suite.optimizers": ",".join(a.name for a in plan.algorithms),
            "suite.trials": str(plan.trials),
            "suite.studies": str(plan.studies),
            "suite.timing_steps": str(plan.timing_steps),
        }
        for w in plan.workloads:
            params[f"suite.workload.{w.name}"] = f"{' '.join(w.overrides)}; target {w.target:g}; {w.epochs} epochs"
        client = open_store(context.tracking_uri)
        client.log_batch(context.parent_run_id, params=[Param(k, v[:6000]) for k, v in params.items()])
        client.set_tag(context.parent_run_id, "lightsweep.suite", "true")


def tell(storage: Any, study: Any, trial: Any, ret: Any) -> None:
    """Optuna hears the job's outcome: PRUNED (its job marked its trial), COMPLETE with val/acc, or FAIL."""
    import math

    from optuna.trial import TrialState

    from lightsweep.sweeps.study import PRUNED_ATTR

    # from the database: the job marked its trial through a storage of its own
    study_id = storage.get_study_id_from_name(study.study_name)
    attrs = storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)).user_attrs
    if PRUNED_ATTR in attrs:
        study.tell(trial, state=TrialState.PRUNED)
        return
    try:
        value = float(ret.return_value)
    except Exception:
        value = math.nan
    if math.isnan(value):
        study.tell(trial, state=TrialState.FAIL)
    else:
        study.tell(trial, value)
