"""`hydra/sweeper=optuna`: hyperparameter search on current Optuna, with persistent, resumable studies.

The config keys are hydra-optuna-sweeper's (`direction`, `study_name`, `storage`, `n_trials`,
`n_jobs`, `sampler`, `params` in Hydra's sweep syntax, `custom_search_space`, `max_failure_rate`),
plus `pruner` and `heartbeat_interval`. The sweeper asks Optuna for `n_jobs` trials at a time
(`Study.ask`), hands them to the launcher as one batch (a vectorized launcher trains them as one
group) and tells Optuna each job's value (`Study.tell`).

- **Persistent**: the study lives in `storage` (any SQLAlchemy URL; default `optuna.db` next to the
  MLflow store) under `study_name` (default: named after the search). Re-running the same command
  continues it until `n_trials` trials are complete or pruned: trials that a killed sweep left
  running are failed (their heartbeat stopped) and retried with the same parameters; trials that a
  Ctrl-C stopped are failed and retried at once. A study of another search is refused in one line.
- **One MLflow parent run per study**: `continued_parent_run(config)` tells MLflowSweepCallback which
  parent to continue; each trial's child run is tagged `optuna.study` / `optuna.trial`, each trial
  gets the user attribute `mlflow_run_id`.
- **Pruning** (`hydra/sweeper/pruner=median|successive_halving|hyperband`): jobs report
  `optimized_metric` every epoch (lightsweep.callbacks.pruning); a pruned job marks its trial, and
  the sweeper tells Optuna PRUNED.
"""

# No `from __future__ import annotations`: Hydra's plugin scan executes this module outside
# sys.modules, where dataclasses cannot resolve string annotations.
import logging
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from omegaconf import MISSING, DictConfig, OmegaConf

log = logging.getLogger(__name__)


# --- samplers: hydra/sweeper/sampler=<name>, arguments as Optuna's (hydra-optuna-sweeper's keys) --------


@dataclass
class TPESamplerConf:
    _target_: str = "optuna.samplers.TPESampler"
    seed: Optional[int] = None
    consider_prior: Optional[bool] = None
    prior_weight: Optional[float] = None
    consider_magic_clip: Optional[bool] = None
    consider_endpoints: Optional[bool] = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: Optional[bool] = None
    warn_independent_sampling: Optional[bool] = None
    constant_liar: bool = True  # a batch's trials are asked together: each sees the others as pending


@dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: Optional[int] = None


@dataclass
class CmaEsSamplerConf:
    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: Optional[int] = None
    x0: Optional[Dict[str, Any]] = None
    sigma0: Optional[float] = None
    n_startup_trials: int = 1
    warn_independent_sampling: bool = True
    consider_pruned_trials: bool = False
    restart_strategy: Optional[str] = None
    popsize: Optional[int] = None
    use_separable_cma: bool = False
    with_margin: bool = False
    lr_adapt: bool = False


@dataclass
class QMCSamplerConf:
    """Quasirandom trials (a Sobol or Halton sequence), as in MLCommons AlgoPerf's external tuning.
    Scrambled by default, so that the seed picks the sequence (unscrambled, its first point is the
    search space's lower corner). Seeded by default: a study continued later, or shared, must draw
    from the same sequence (Optuna keeps the position in it per seed)."""

    _target_: str = "optuna.samplers.QMCSampler"
    seed: Optional[int] = 0
    qmc_type: str = "sobol"
    scramble: bool = True
    warn_asynchronous_seeding: bool = True
    warn_independent_sampling: bool = True


@dataclass
class GridSamplerConf:
    """Every point of a discrete search space (choice, range); the grid is built from `params`."""

    _target_: str = "optuna.samplers.GridSampler"
    _partial_: bool = True
    seed: Optional[int] = None


@dataclass
class NSGAIISamplerConf:
    _target_: str = "optuna.samplers.NSGAIISampler"
    seed: Optional[int] = None
    population_size: int = 50
    mutation_prob: Optional[float] = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5


@dataclass
class GPSamplerConf:
    _target_: str = "optuna.samplers.GPSampler"
    seed: Optional[int] = None
    n_startup_trials: int = 10
    deterministic_objective: bool = False


SAMPLERS = {
    "tpe": TPESamplerConf,
    "random": RandomSamplerConf,
    "cmaes": CmaEsSamplerConf,
    "qmc": QMCSamplerConf,
    "grid": GridSamplerConf,
    "nsgaii": NSGAIISamplerConf,
    "gp": GPSamplerConf,
}


# --- pruners: hydra/sweeper/pruner=<name> ------------------------------------------------------------


@dataclass
class NoPrunerConf:
    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class MedianPrunerConf:
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class SuccessiveHalvingPrunerConf:
    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "auto"
    reduction_factor: int = 4
    min_early_stopping_rate: int = 0
    bootstrap_count: int = 0


@dataclass
class HyperbandPrunerConf:
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"
    reduction_factor: int = 3
    bootstrap_count: int = 0


PRUNERS = {
    "none": NoPrunerConf,
    "median": MedianPrunerConf,
    "successive_halving": SuccessiveHalvingPrunerConf,
    "hyperband": HyperbandPrunerConf,
}


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.lightsweep_optuna.optuna_sweeper.OptunaSweeper"
    # The sampler and pruner are built by the sweeper, from optuna.samplers / optuna.pruners only.
    _recursive_: bool = False
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "none"}])

    # hydra/sweeper/sampler=<tpe|random|cmaes|qmc|grid|nsgaii|gp>, or a node with `_target_: optuna.samplers.<Class>`
    # (hydra.sweeper.sampler=<name> picks one with its defaults)
    sampler: Any = MISSING
    # hydra/sweeper/pruner=<none|median|successive_halving|hyperband>, or `_target_: optuna.pruners.<Class>`
    pruner: Any = MISSING
    # minimize | maximize, or a list of them (one per value the task returns: multi-objective)
    direction: Any = "minimize"
    # a SQLAlchemy URL (sqlite:///path/optuna.db, postgresql+psycopg2://...); null: optuna.db next to
    # the MLflow store (in memory for an app without one)
    storage: Optional[Any] = None
    # null: named after the search (`<hparams_search or search>-<hash>`), so the same command continues it
    study_name: Optional[str] = None
    # the study ends when this many trials are complete or pruned (re-runs continue until then)
    n_trials: int = 20
    # trials asked at a time, launched as one batch
    n_jobs: int = 2
    # a batch whose failed jobs (an exception, not a failed lightsweep run) exceed this rate stops the sweep
    max_failure_rate: float = 0.0
    # the search space, in Hydra's sweep syntax (`optimizer.lr: tag(log, interval(1e-5, 1.0))`); plain
    # values are fixed overrides
    params: Optional[Dict[str, str]] = None
    # a dotpath to `fn(cfg, trial)` that suggests more parameters (Optuna's define-by-run)
    custom_search_space: Optional[str] = None
    # seconds between the sweep's heartbeats for its running trials; a trial without one for twice
    # this long belongs to a killed sweep, and is failed and retried
    heartbeat_interval: int = 10


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="lightsweep")
for _name, _node in SAMPLERS.items():
    ConfigStore.instance().store(group="hydra/sweeper/sampler", name=_name, node=_node, provider="lightsweep")
for _name, _node in PRUNERS.items():
    ConfigStore.instance().store(group="hydra/sweeper/pruner", name=_name, node=_node, provider="lightsweep")


# --- the plan: the sweeper's settings, checked --------------------------------------------------------


def component_config(value: Any, kinds: Dict[str, Any], module: str, key: str) -> DictConfig:
    """A sampler's or pruner's config node from the setting: a name (`qmc`) or a node with `_target_` in
    `module`. A user's mistake is refused in one line that names `key`."""
    if isinstance(value, str):
        if value not in kinds:
            raise_error(
                f"{key}={value} is not one of {', '.join(kinds)} (or give {key}._target_={module}.<Class> "
                "with its arguments)"
            )
        return OmegaConf.structured(kinds[value])
    target = str(value.get("_target_", "")) if OmegaConf.is_dict(value) else ""
    if not target.startswith(f"{module}."):
        raise_error(f"{key}._target_={target or value} is not in {module}: use one of {', '.join(kinds)}")
    return value


def raise_error(message: str) -> None:
    from lightsweep.errors import LightsweepError

    raise LightsweepError(message)


def load_function(path: str, key: str) -> Any:
    """The function at a dotpath (`module.function`, `package.module.Class.method`)."""
    import importlib

    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for name in parts[cut:]:
                found = getattr(found, name)
        except AttributeError:
            break
        if callable(found):
            return found
        break
    raise_error(f"{key}={path} is not a function that can be imported (module.function)")


def grid_search_space(space: Dict[str, Any]) -> Dict[str, List[Any]]:
    """GridSampler's points from discrete distributions (choice, range)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    grid = {}
    for key, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            grid[key] = list(dist.choices)
        elif isinstance(dist, (IntDistribution, FloatDistribution)) and dist.step is not None and not dist.log:
            n = int(round((dist.high - dist.low) / dist.step)) + 1
            grid[key] = [type(dist.low)(dist.low + i * dist.step) for i in range(n)]
        else:
            raise_error(f"hydra/sweeper/sampler=grid needs a discrete search space: {key} is continuous ({dist})")
    return grid


def instantiate_component(node: DictConfig, key: str, base: type, **extra: Any) -> Any:
    from hydra.utils import instantiate

    from lightsweep.sweeps.study import experimental_ok

    try:
        with experimental_ok():
            made = instantiate(node, **extra)
            if node.get("_partial_"):
                made = made()
    except Exception as err:
        cause = err.__cause__ or err
        reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        raise_error(f"{key}: {node.get('_target_')} rejected its arguments ({reason})")
    if not isinstance(made, base):
        raise_error(f"{key}._target_={node.get('_target_')} is not an Optuna {base.__name__}")
    return made


@dataclass
class StudyPlan:
    """The sweeper's settings for one sweep, checked (`from_config`): the search, where its study lives, and
    how to build its sampler and pruner."""

    search: Any  # lightsweep.sweeps.study.Search
    study_name: str
    storage_url: Optional[str]
    sampler: DictConfig
    pruner: DictConfig
    n_trials: int
    n_jobs: int
    max_failure_rate: float
    heartbeat_interval: Optional[int]
    monitor: Optional[str]  # the per-epoch metric that jobs report (None: no pruning)
    custom_search_space: Any = None  # the function, loaded

    @classmethod
    def from_config(cls, config: DictConfig, arguments: List[str]) -> "StudyPlan":
        """From the sweep's config (`hydra.sweeper`, `optimized_metric`) and its task overrides."""
        from lightsweep.sweeps.study import Search, default_storage, parse_search_space

        settings = config.hydra.sweeper
        for key, low in (("n_trials", 1), ("n_jobs", 1), ("heartbeat_interval", 1)):
            value = settings.get(key)
            if not isinstance(value, int) or value < low:
                raise_error(f"hydra.sweeper.{key}={value} must be an integer >= {low}")
        rate = settings.get("max_failure_rate", 0.0)
        if not 0.0 <= float(rate) <= 1.0:
            raise_error(f"hydra.sweeper.max_failure_rate={rate} must be between 0 and 1")
        direction = settings.get("direction", "minimize")
        directions = [str(d) for d in direction] if OmegaConf.is_list(direction) else [str(direction)]
        directions = [d.rsplit(".", 1)[-1].lower() for d in directions]  # (hydra-optuna-sweeper's Direction enum)
        if not directions or any(d not in ("minimize", "maximize") for d in directions):
            raise_error(f"hydra.sweeper.direction={direction} must be minimize or maximize, or a list of them")
        metric = config.get("optimized_metric")
        objective = [str(m) for m in metric] if OmegaConf.is_list(metric) else ([str(metric)] if metric else [])
        if objective and len(objective) != len(directions):
            raise_error(
                f"hydra.sweeper.direction has {len(directions)} direction(s) for optimized_metric={metric}: "
                "give one direction per metric"
            )
        custom = settings.get("custom_search_space")
        custom_fn = load_function(str(custom), "hydra.sweeper.custom_search_space") if custom else None
        params = settings.get("params")
        params = OmegaConf.to_container(params, resolve=False) if params else None
        space = parse_search_space(params, [str(a) for a in arguments], custom_search_space=custom_fn is not None)
        search = Search(space, objective, directions, str(custom) if custom else None)

        sampler = component_config(settings.get("sampler"), SAMPLERS, "optuna.samplers", "hydra.sweeper.sampler")
        pruner = component_config(settings.get("pruner") or "none", PRUNERS, "optuna.pruners", "hydra.sweeper.pruner")
        storage = settings.get("storage")
        storage = default_storage(config) if storage is None else str(storage)
        prunes = not str(pruner.get("_target_")).endswith(".NopPruner")
        monitor = None
        if prunes:
            if len(directions) > 1:
                raise_error("hydra.sweeper.pruner: Optuna prunes single-objective studies only; use pruner=none")
            if len(objective) != 1 or not objective[0].startswith("val/"):
                raise_error(
                    f"hydra.sweeper.pruner prunes on the validation metric the search optimizes, logged every epoch: "
                    f"set optimized_metric to one (val/acc, val/loss), not {metric}"
                )
            if storage is None:
                raise_error("hydra.sweeper.pruner needs a database storage (hydra.sweeper.storage): jobs report to it")
            monitor = objective[0]
        choices = config.hydra.runtime.get("choices", {}) if "runtime" in config.hydra else {}
        prefix = str(choices.get("hparams_search") or "search")
        name = settings.get("study_name") or search.default_study_name(prefix)
        plan = cls(
            search=search,
            study_name=str(name),
            storage_url=storage,
            sampler=sampler,
            pruner=pruner,
            n_trials=int(settings.n_trials),
            n_jobs=int(settings.n_jobs),
            max_failure_rate=float(rate),
            heartbeat_interval=int(settings.heartbeat_interval) if storage is not None else None,
            monitor=monitor,
            custom_search_space=custom_fn,
        )
        plan.build_sampler(0)  # refuse bad arguments now
        plan.build_pruner()
        return plan

    def build_sampler(self, trials_before: int) -> Any:
        """The sampler. A study continued with a seeded sampler gets the seed plus the number of trials
        it has, so its random draws do not repeat the first sweep's (QMC keeps its seed: it picks the
        sequence, whose position Optuna keeps in the study)."""
        import optuna

        node = self.sampler.copy()
        target = str(node.get("_target_"))
        if trials_before and node.get("seed") is not None and not target.endswith("QMCSampler"):
            node.seed = int(node.seed) + trials_before
        extra = {"search_space": grid_search_space(self.search.space.distributions)} if self.is_grid else {}
        return instantiate_component(node, "hydra.sweeper.sampler", optuna.samplers.BaseSampler, **extra)

    @property
    def is_grid(self) -> bool:
        return str(self.sampler.get("_target_")).endswith("GridSampler")

    def build_pruner(self) -> Any:
        import optuna

        return instantiate_component(self.pruner, "hydra.sweeper.pruner", optuna.pruners.BasePruner)

    def open_storage(self) -> Any:
        from lightsweep.sweeps.study import open_storage

        return open_storage(self.storage_url, self.heartbeat_interval)

    def recorded_search(self, storage: Any) -> Optional[Dict[str, Any]]:
        """The study's search record (None: no such study yet); a study of another search is refused."""
        from lightsweep.sweeps.study import SEARCH_ATTR, describe_storage, study_id_of

        study_id = study_id_of(storage, self.study_name)
        if study_id is None:
            return None
        attrs = storage.get_study_user_attrs(study_id)
        recorded = attrs.get(SEARCH_ATTR)
        if recorded is None and storage.get_all_trials(study_id, deepcopy=False):
            difference = "it was not made by lightsweep's sweeper (no record of its search)"
        else:
            difference = self.search.difference(recorded) if recorded is not None else None
        if difference:
            raise_error(
                f"hydra.sweeper.study_name={self.study_name}: that study in {describe_storage(self.storage_url)} is "
                f"another search ({difference}): repeat its own command to continue it, or name a new study"
            )
        return attrs


# --- the sweeper -------------------------------------------------------------------------------------


class Heartbeats:
    """Records the heartbeat of the trials this sweep runs, every `interval` seconds, from a thread: a
    sweep that is killed stops beating, and the next run of the study fails and retries its trials."""

    def __init__(self, storage: Any, interval: Optional[int]):
        self.storage, self.interval = storage, interval
        self.trial_ids: set = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread: Optional[threading.Thread] = None

    def add(self, trial_ids: List[int]) -> None:
        if not self.interval:
            return
        for trial_id in trial_ids:
            self.storage.record_heartbeat(trial_id)  # at once: a trial without any heartbeat never goes stale
        with self.lock:
            self.trial_ids.update(trial_ids)
        if self.thread is None:
            self.thread = threading.Thread(target=self.beat, name="optuna-heartbeats", daemon=True)
            self.thread.start()

    def remove(self, trial_ids: List[int]) -> None:
        with self.lock:
            self.trial_ids.difference_update(trial_ids)

    def beat(self) -> None:
        while not self.stop.wait(self.interval):
            with self.lock:
                ids = list(self.trial_ids)
            for trial_id in ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as err:  # the database is away for a moment: the next beat may reach it
                    log.warning("heartbeat of trial %d not recorded: %s", trial_id, err)

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=5)


class OptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        # The settings are read from the sweep's config (`hydra.sweeper`) in `sweep`, as
        # `continued_parent_run` reads them before the sweeper exists.
        self.settings = settings
        self.config: Optional[DictConfig] = None
        self.launcher: Any = None
        self.hydra_context: Any = None
        self.job_idx = 0

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    @classmethod
    def continued_parent_run(cls, config: DictConfig) -> Optional[str]:
        """The MLflow parent run of this search's study, when the study exists (MLflowSweepCallback
        continues it instead of creating one). Checks the settings first: bad input is refused
        (LightsweepError) before any run is created."""
        from lightsweep.sweeps.study import PARENT_ATTR

        plan = StudyPlan.from_config(config, [str(o) for o in config.hydra.overrides.task])
        attrs = plan.recorded_search(plan.open_storage())
        return None if attrs is None else attrs.get(PARENT_ATTR)

    def sweep(self, arguments: List[str]) -> Any:
        from lightsweep.errors import LightsweepError

        assert self.config is not None and self.launcher is not None
        try:
            plan = StudyPlan.from_config(self.config, list(arguments))
            storage = plan.open_storage()
            attrs = plan.recorded_search(storage)
        except LightsweepError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        return StudyRun(self, plan, storage, attrs).run()


class StudyRun:
    """One run of the sweeper over its study: continue it, run batches until `n_trials` trials are
    complete or pruned, tell Optuna each job's outcome, log the best."""

    def __init__(self, sweeper: OptunaSweeper, plan: StudyPlan, storage: Any, attrs: Optional[Dict[str, Any]]):
        import optuna

        from lightsweep.sweeps.study import SEARCH_ATTR, describe_storage, experimental_ok, study_id_of

        self.sweeper, self.plan, self.storage = sweeper, plan, storage
        self.config = sweeper.config
        self.sweep_dir = Path(str(self.config.hydra.sweep.dir))
        study_id = study_id_of(storage, plan.study_name)
        before = len(storage.get_all_trials(study_id, deepcopy=False)) if study_id is not None else 0
        with experimental_ok():
            self.study = optuna.create_study(
                study_name=plan.study_name,
                storage=storage,
                sampler=plan.build_sampler(before),
                pruner=plan.build_pruner(),
                directions=plan.search.directions,
                load_if_exists=True,
            )
        self.study_id = storage.get_study_id_from_name(plan.study_name)
        if attrs is None or SEARCH_ATTR not in attrs:
            self.study.set_user_attr(SEARCH_ATTR, plan.search.record())
        self.where = describe_storage(plan.storage_url)
        self.heartbeats = Heartbeats(storage, plan.heartbeat_interval)
        self.returns: List[Any] = []
        self.tracking: Optional[Any] = None  # (MLflow client, SweepContext) of a tracked sweep

    # -- the study's state --------------------------------------------------------------------------

    def counts(self) -> Dict[str, int]:
        from optuna.trial import TrialState

        states = [t.state for t in self.study.get_trials(deepcopy=False)]
        return {
            "finished": sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states),
            "pruned": sum(s == TrialState.PRUNED for s in states),
            "running": sum(s == TrialState.RUNNING for s in states),
            "failed": sum(s == TrialState.FAIL for s in states),
            "all": len(states),
        }

    def fail_stale(self) -> None:
        import optuna

        from lightsweep.sweeps.study import experimental_ok

        if self.plan.heartbeat_interval:
            with experimental_ok():
                optuna.storages.fail_stale_trials(self.study)

    def recover(self) -> None:
        """Trials left RUNNING by a killed sweep are failed and retried. A trial still RUNNING may also
        be another live sweep's (a team sharing the study): wait until its heartbeat is stale (a dead
        sweep's) or two intervals have passed (a live one's, whose trial counts as on its way)."""
        self.fail_stale()
        running = self.counts()["running"]
        if not running or not self.plan.heartbeat_interval:
            return
        grace = 2 * self.plan.heartbeat_interval + 1
        log.info(
            "Study %s: %d trial(s) RUNNING: waiting up to %d s to tell a killed sweep's (retried) from a running one's",
            self.plan.study_name,
            running,
            grace,
        )
        deadline = time.monotonic() + grace
        while running and time.monotonic() < deadline:
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            self.fail_stale()
            running = self.counts()["running"]
        if running:
            log.info("Study %s: %d trial(s) run by another sweep count as on their way", self.plan.study_name, running)

    def link_parent(self) -> Optional[Any]:
        """The sweep's MLflow parent (SweepContext) and the study name each other."""
        from lightsweep.sweeps.context import SweepContext
        from lightsweep.sweeps.study import PARENT_ATTR

        context = SweepContext.read(self.sweep_dir)
        if context is None or not context.tracked:
            return None
        self.study.set_user_attr(PARENT_ATTR, context.parent_run_id)
        try:
            from lightsweep.tracking.store import open_store

            client = open_store(context.tracking_uri)
            client.set_tag(context.parent_run_id, "optuna.study", self.plan.study_name)
            client.set_tag(context.parent_run_id, "optuna.storage", self.where)
            return client, context
        except Exception as err:
            log.warning("could not tag the parent run with its study: %s", err)
            return None

    # -- the loop -----------------------------------------------------------------------------------

    def run(self) -> List[Any]:
        from lightsweep.sweeps.study import TrialHandoff

        plan = self.plan
        self.tracking = self.link_parent()
        self.handoff = TrialHandoff(
            plan.study_name,
            plan.storage_url,
            plan.monitor,
            OmegaConf.to_container(plan.pruner, resolve=True) if plan.monitor else None,
        )
        n_trials = plan.n_trials
        if plan.is_grid:
            size = math.prod(len(v) for v in grid_search_space(plan.search.space.distributions).values())
            if size < n_trials:
                log.info("Grid of %d points: n_trials %d -> %d", size, n_trials, size)
                n_trials = size
        try:
            self.recover()
            counts = self.counts()
            budget = max(0, n_trials - counts["finished"] - counts["running"])
            state = "new study" if counts["all"] == 0 else f"{counts['finished']} of {n_trials} trials finished"
            log.info(
                "Study %s in %s (%s): %d trial(s) to run, %d at a time",
                plan.study_name,
                self.where,
                state,
                budget,
                plan.n_jobs,
            )
            asked = 0
            while asked < budget:
                counts = self.counts()
                size = min(plan.n_jobs, budget - asked, n_trials - counts["finished"] - counts["running"])
                if size <= 0:
                    break
                self.run_batch(size)
                asked += size
        finally:
            self.heartbeats.close()
        self.summarize(n_trials)
        return self.returns

    def run_batch(self, size: int) -> None:
        from optuna.trial import TrialState

        from lightsweep import interrupts
        from lightsweep.sweeps.study import experimental_ok

        with experimental_ok():
            trials = [self.study.ask(fixed_distributions=self.plan.search.space.distributions) for _ in range(size)]
        ids = [self.storage.get_trial_id_from_study_id_trial_number(self.study_id, t.number) for t in trials]
        self.heartbeats.add(ids)
        start = self.sweeper.job_idx
        try:
            if self.plan.custom_search_space is not None:
                for trial in trials:
                    self.plan.custom_search_space(self.config, trial)
            overrides = [self.plan.search.job_overrides(trial.params) for trial in trials]
            numbers = [t.number for t in trials]
            consecutive = numbers == list(range(numbers[0], numbers[0] + len(numbers)))
            # Job numbers follow trial numbers (job 7 is trial 7), unique under a continued parent run.
            start = numbers[0] if consecutive and numbers[0] >= self.sweeper.job_idx else self.sweeper.job_idx
            self.handoff.trials.update({str(start + i): n for i, n in enumerate(numbers)})
            self.handoff.write(self.sweep_dir)
            returns = self.sweeper.launcher.launch(overrides, initial_job_idx=start)
            self.sweeper.job_idx = start + len(returns)
        except BaseException:
            # Ctrl-C, SIGTERM, a launcher's crash: this batch's trials are failed and retried with the same
            # parameters by the next run of the study (the CLI says that the sweep stopped).
            with interrupts.deferred():
                self.name_runs(trials, start)
                retry = getattr(self.storage, "get_heartbeat_stale_trial_callback", lambda: None)()
                for trial in trials:
                    frozen = self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                    if retry is not None and frozen.state == TrialState.FAIL:
                        with experimental_ok():
                            retry(self.study, frozen)
            raise
        runs = self.name_runs(trials, start)
        failures = []
        for trial, trial_id, ret in zip(trials, ids, returns):
            failure = self.tell(trial, trial_id, ret, runs.get(trial.number))
            if failure is not None:
                failures.append(failure)
        self.heartbeats.remove(ids)
        self.returns.append(returns)
        if failures and len(failures) / len(returns) > self.plan.max_failure_rate:
            log.error(
                "%d of %d jobs of the batch failed (hydra.sweeper.max_failure_rate=%s)",
                len(failures),
                len(returns),
                self.plan.max_failure_rate,
            )
            for ret in returns:
                ret.return_value  # raises the first failed job's error, with its traceback

    def tell(self, trial: Any, trial_id: int, ret: Any, run_id: Optional[str] = None) -> Optional[BaseException]:
        """Tell Optuna the job's outcome: PRUNED when its job was pruned, COMPLETE with its value(s),
        FAIL when it raised or returned no usable value. Returns the error of a job that raised."""
        from optuna.trial import TrialState

        from lightsweep.sweeps.study import PRUNED_ATTR

        attrs = self.storage.get_trial(trial_id).user_attrs
        if PRUNED_ATTR in attrs:
            self.safe_tell(trial, state=TrialState.PRUNED)
            if run_id is not None and self.tracking is not None:  # (the job's callback tagged it too, if it could)
                try:
                    self.tracking[0].set_tag(run_id, "lightsweep.pruned", "true")
                    self.tracking[0].set_tag(run_id, "lightsweep.pruned_epoch", str(attrs[PRUNED_ATTR]))
                except Exception as err:
                    log.warning("could not tag run %s as pruned: %s", run_id, err)
            return None
        try:
            value = ret.return_value
        except Exception as err:
            self.safe_tell(trial, state=TrialState.FAIL)
            log.warning("trial %d failed: %s: %s", trial.number, type(err).__name__, err)
            return err
        try:
            if len(self.plan.search.directions) == 1:
                values = [float(value)]
            else:
                values = [float(v) for v in value]
                if len(values) != len(self.plan.search.directions):
                    raise ValueError(f"{len(values)} values for {len(self.plan.search.directions)} directions")
            if any(math.isnan(v) for v in values):
                raise ValueError("NaN")
        except (TypeError, ValueError) as err:
            log.warning("trial %d failed: its job returned %r, not a value to optimize (%s)", trial.number, value, err)
            self.safe_tell(trial, state=TrialState.FAIL)
            return None
        self.safe_tell(trial, values=values)
        return None

    def safe_tell(self, trial: Any, **kwargs: Any) -> None:
        try:
            self.study.tell(trial, **kwargs)
        except RuntimeError as err:
            if "Study.stop" not in str(err):  # GridSampler stops the study once its grid is done
                raise

    def name_runs(self, trials: List[Any], start: int) -> Dict[int, str]:
        """Each trial's MLflow child run (found by its job number) and the trial name each other.
        Returns {trial number: run id}."""
        from lightsweep.sweeps.study import RUN_ATTR

        named: Dict[int, str] = {}
        if self.tracking is None:
            return named
        client, context = self.tracking
        try:
            runs = client.search_runs(
                [context.experiment_id],
                filter_string=(
                    f"tags.mlflow.parentRunId = '{context.parent_run_id}' and "
                    f"tags.`lightsweep.sweep_id` = '{context.sweep_id}'"
                ),
                max_results=10000,
            )
            by_job = {r.data.tags.get("lightsweep.job"): r.info.run_id for r in runs}
            for i, trial in enumerate(trials):
                run_id = by_job.get(str(start + i))
                if run_id is None:
                    continue
                trial.set_user_attr(RUN_ATTR, run_id)
                client.set_tag(run_id, "optuna.study", self.plan.study_name)
                client.set_tag(run_id, "optuna.trial", str(trial.number))
                named[trial.number] = run_id
        except Exception as err:  # the study goes on; the runs keep their job numbers
            log.warning("could not link trials and runs: %s", err)
        return named

    def summarize(self, n_trials: int) -> None:
        counts = self.counts()
        log.info(
            "Study %s: %d of %d trials finished (%d pruned), %d failed, %d running elsewhere",
            self.plan.study_name,
            counts["finished"],
            n_trials,
            counts["pruned"],
            counts["failed"],
            counts["running"],
        )
        results: Dict[str, Any] = {"name": "optuna", "study_name": self.plan.study_name, "storage": self.where}
        try:
            if len(self.plan.search.directions) == 1:
                best = self.study.best_trial
                results.update(best_params=best.params, best_value=best.value)
                log.info(f"Best parameters: {best.params}")
                log.info(f"Best value: {best.value}")
            else:
                front = self.study.best_trials
                results["solutions"] = [{"params": t.params, "values": t.values} for t in front]
                log.info(f"Number of Pareto solutions: {len(front)}")
                for t in front:
                    log.info(f"    Values: {t.values}, Params: {t.params}")
        except ValueError:
            log.info("Study %s has no complete trial yet", self.plan.study_name)
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), self.sweep_dir / "optimization_results.yaml")
