"""The Optuna study behind `hydra/sweeper=optuna`: what a search is, where its study lives, and how a
trial's job finds its trial.

- **The search** (`Search`): the search space (Optuna distributions parsed from Hydra's sweep syntax,
  `interval(...)`, `tag(log, ...)`, `choice(...)`, `range(...)`), the fixed overrides and the
  objective (`optimized_metric`, directions). Its record is kept in the study (user attribute
  `lightsweep.search`): a re-run continues the study only when it is the same search.
- **The storage**: any SQLAlchemy URL; by default `optuna.db` next to the MLflow store (a sqlite
  file), so that re-running a command continues its study without configuration.
- **A trial's job**: before each batch the sweeper writes `.lightsweep-optuna.json` into the sweep
  dir (job number -> trial number, the study, its storage, the pruner and the metric it prunes on);
  a job, in whatever process or host runs it, loads its trial from there through Optuna's public API
  (`trial_for_job`). The sweep dir is already how jobs receive the MLflow parent run (SweepContext).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lightsweep.errors import LightsweepError

HANDOFF_FILE = ".lightsweep-optuna.json"
SEARCH_ATTR = "lightsweep.search"  # study user attribute: the search's record (see Search.record)
PARENT_ATTR = "mlflow_parent_run_id"  # study user attribute: the MLflow parent run of the study's sweeps
RUN_ATTR = "mlflow_run_id"  # trial user attribute: the trial's MLflow child run
PRUNED_ATTR = "lightsweep.pruned_epoch"  # trial user attribute, set by the job that the pruner stopped
# Overrides that say where or how verbosely a search runs, not what it searches: a re-run may change them.
WHERE_KEYS = ("paths.", "hydra.", "trainer.enable_progress_bar", "callbacks.progress_bar", "callbacks.model_summary")
WHERE_KEYS_EXACT = ("threads", "experiment_name", "logger", "log_models", "plots")


@contextlib.contextmanager
def experimental_ok():
    """Optuna's features that lightsweep uses on purpose while Optuna marks them experimental (QMC
    sampler, heartbeats, `fail_stale_trials`, the stale-trial retry callback) warn at every use: not
    the user's to act on. So does `ask()` on a storage with heartbeats ("supposed to be used with
    Study.optimize"): the sweeper records the heartbeats of the trials it asks itself."""
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        yield


# --- the search space ----------------------------------------------------------------------------


def distribution_of(override) -> Any:
    """The Optuna distribution of one parsed Hydra sweep override (`optimizer.lr=tag(log, interval(1e-5, 1))`),
    None when the override is a plain value. ValueError for a sweep Optuna cannot sample."""
    from hydra.core.override_parser.types import Glob, Transformer
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if not override.is_sweep_override():
        return None
    value = override.value()
    if isinstance(value, Glob):
        raise ValueError("glob() picks config group options; Optuna samples interval(), range() and choice()")
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        choices = list(override.sweep_iterator(transformer=Transformer.encode))
        for choice in choices:
            if not isinstance(choice, (str, int, float, bool, type(None))):
                raise ValueError(f"a choice must be a str, int, float, bool or null, not {choice!r}")
        return CategoricalDistribution(choices)
    if override.is_range_sweep():
        # Hydra's range(start, stop, step) stops before `stop`, as Python's does (and as the basic sweeper
        # sweeps it); Optuna's bounds are inclusive: the distribution spans the values Hydra would give.
        values = list(override.sweep_iterator())
        if not values:
            raise ValueError(f"range({value.start}, {value.stop}, step={value.step}) is empty")
        step = abs(value.step)
        if any(isinstance(v, float) for v in (*values, step)):
            return FloatDistribution(float(min(values)), float(max(values)), step=float(step))
        return IntDistribution(int(min(values)), int(max(values)), step=int(step))
    if override.is_interval_sweep():
        log = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(int(value.start), int(value.end), log=log)
        return FloatDistribution(float(value.start), float(value.end), log=log)
    raise ValueError("Optuna samples from interval(), range() and choice() (a comma list), not this sweep")


@dataclass
class SearchSpace:
    """What a search varies (distributions by override key), and what it fixes."""

    distributions: dict = field(default_factory=dict)  # key (`optimizer.lr`, `+x`) -> Optuna distribution
    fixed: dict = field(default_factory=dict)  # key -> value, as Hydra overrides
    deletes: list = field(default_factory=list)  # `~key` overrides


def parse_search_space(
    params: dict | None, arguments: list[str], custom_search_space: bool = False, source: str = "hydra.sweeper.params"
) -> SearchSpace:
    """`params` (`hydra.sweeper.params`, or what `source` names) then the command line's overrides (later
    ones win), as Optuna's distributions and fixed overrides. A malformed entry is refused in one line that
    names it, and so is a search with nothing to search (unless a custom_search_space function suggests it all)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    space = SearchSpace()
    entries = [(f"{k}={v}", f"{source}.{k}") for k, v in (params or {}).items()]
    entries += [(str(a), "the command line") for a in arguments]
    for line, where in entries:
        try:
            (override,) = parser.parse_overrides([line])
        except OverrideParseException as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else "cannot parse it"
            raise LightsweepError(f"search space: {line!r} ({where}) is malformed: {reason}") from None
        if override.is_delete():
            space.deletes.append(line)
            continue
        key = override.get_key_element()
        try:
            dist = distribution_of(override)
        except (ValueError, TypeError, AssertionError) as err:
            raise LightsweepError(f"search space: {line!r} ({where}) is not a valid search space: {err}") from None
        space.distributions.pop(key, None)
        space.fixed.pop(key, None)
        if dist is None:
            space.fixed[key] = override.get_value_element_as_str()
        else:
            space.distributions[key] = dist
    if not space.distributions and not custom_search_space:
        raise LightsweepError(
            "search space: nothing to search: give hydra.sweeper.params (e.g. optimizer.lr: tag(log, interval(1e-5, 1))) "
            "or a sweep on the command line"
        )
    return space


def is_where_key(key: str) -> bool:
    key = key.lstrip("+~").split("=", 1)[0]
    return key.startswith(WHERE_KEYS) or key in WHERE_KEYS_EXACT


# --- the search ----------------------------------------------------------------------------------


@dataclass
class Search:
    """One search: space, fixed overrides and objective. Two runs of the same search continue one study."""

    space: SearchSpace
    objective: list  # the metrics optimized (`optimized_metric`), [] for a task that returns its value itself
    directions: list  # "minimize" / "maximize", one per objective value
    custom_search_space: str | None = None

    def record(self) -> dict:
        """What identifies the search (JSON): not the sampler, the pruner, n_trials or n_jobs, and not
        overrides that only say where or how verbosely to run (paths, progress bars)."""
        from optuna.distributions import distribution_to_json

        return {
            "space": {k: json.loads(distribution_to_json(d)) for k, d in sorted(self.space.distributions.items())},
            "fixed": sorted(f"{k}={v}" for k, v in self.space.fixed.items() if not is_where_key(k)),
            "deletes": sorted(d for d in self.space.deletes if not is_where_key(d)),
            "objective": list(self.objective),
            "directions": list(self.directions),
            "custom_search_space": self.custom_search_space,
        }

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.record(), sort_keys=True).encode()).hexdigest()

    def default_study_name(self, prefix: str) -> str:
        """`study_name: null`: the search names its study (`lr_optuna-1a2b3c4d`), so the same command
        continues it and another search gets a study of its own."""
        return f"{prefix}-{self.fingerprint()[:8]}"

    def difference(self, recorded: dict) -> str | None:
        """How a study's recorded search differs from this one, in a few words; None when it is the same."""
        mine = self.record()
        if recorded == mine:
            return None
        theirs_space, my_space = recorded.get("space", {}), mine["space"]
        for key in sorted(set(theirs_space) | set(my_space)):
            if key not in my_space:
                return f"it also searches {key}"
            if key not in theirs_space:
                return f"it does not search {key}"
            if theirs_space[key] != my_space[key]:
                return f"it searches {key} over another range"
        if recorded.get("fixed") != mine["fixed"] or recorded.get("deletes") != mine["deletes"]:
            theirs_fixed = set(recorded.get("fixed", [])) | set(recorded.get("deletes", []))
            my_fixed = set(mine["fixed"]) | set(mine["deletes"])
            there, here = sorted(theirs_fixed - my_fixed), sorted(my_fixed - theirs_fixed)
            return f"its fixed overrides are [{' '.join(there)}], here [{' '.join(here)}]"
        if recorded.get("objective") != mine["objective"] or recorded.get("directions") != mine["directions"]:
            return (
                f"it optimizes {recorded.get('objective') or 'the task value'} ({', '.join(recorded.get('directions', []))}), "
                f"here {mine['objective'] or 'the task value'} ({', '.join(mine['directions'])})"
            )
        return f"its custom_search_space is {recorded.get('custom_search_space')}"

    def job_overrides(self, params: dict) -> list[str]:
        """A trial's overrides: its sampled values, then the fixed overrides and deletions."""
        fixed = {k: v for k, v in self.space.fixed.items() if k not in params}
        return [*(f"{k}={format_value(v)}" for k, v in params.items()), *(f"{k}={v}" for k, v in fixed.items())] + [
            *self.space.deletes
        ]


def format_value(value) -> str:
    """A sampled value as a Hydra override value (strings that the grammar would misread are quoted)."""
    if isinstance(value, str):
        safe = value and all(c.isalnum() or c in "_-./:" for c in value) and value not in ("null", "true", "false")
        return value if safe else "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


# --- the storage ---------------------------------------------------------------------------------


def default_storage(config: DictConfig) -> str | None:
    """`optuna.db` next to the MLflow store: beside its sqlite file, else (a tracking server) in
    `paths.mlruns_dir`. None (in memory, as Hydra's own plugin) for an app without lightsweep's store."""
    from lightsweep.tracking.uris import sqlite_path

    def select(key: str):
        try:
            return OmegaConf.select(config, key, throw_on_missing=False)
        except Exception:  # an interpolation this process cannot resolve
            return None

    uri = select("logger.mlflow.tracking_uri")
    db = sqlite_path(str(uri)) if uri else None
    if db is not None:
        return f"sqlite:///{db.parent / 'optuna.db'}"
    mlruns = select("paths.mlruns_dir")
    return f"sqlite:///{Path(str(mlruns)) / 'optuna.db'}" if mlruns else None


def describe_storage(url: str | None) -> str:
    from lightsweep.tracking.uris import describe

    return "memory (not kept)" if url is None else describe(url)


def open_storage(url: str | None, heartbeat_interval: int | None = None, key: str = "hydra.sweeper.storage"):
    """An Optuna storage ready to use: in memory for None, else an RDBStorage on the URL (its schema
    created now). A sqlite file gets its folder, WAL mode and a 30 s busy timeout (jobs in other
    processes write their trials' reports to it while the sweeper writes). With `heartbeat_interval`
    (seconds), trials whose sweep stopped beating for twice that long are failed and retried with
    the same parameters (Optuna's RetryHeartbeatStaleTrialCallback). Refused in one line that names
    `key` when the database cannot be reached."""
    import optuna

    from lightsweep.tracking.uris import sqlite_path

    if url is None:
        return optuna.storages.InMemoryStorage()
    url = str(url)
    engine_kwargs: dict = {}
    db = sqlite_path(url)
    try:
        if db is not None:
            import sqlite3

            db.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.closing(sqlite3.connect(db, timeout=30)) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
            engine_kwargs = {"connect_args": {"timeout": 30}}
        with experimental_ok():
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=2 * heartbeat_interval if heartbeat_interval else None,
                heartbeat_stale_trial_callback=(
                    optuna.storages.RetryHeartbeatStaleTrialCallback() if heartbeat_interval else None
                ),
            )
    except Exception as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise LightsweepError(
            f"{key}={describe_storage(url)}: cannot open the Optuna storage ({type(err).__name__}: {reason}): "
            "fix the URL, start the database, or leave it out for optuna.db next to the MLflow store"
        ) from None


def study_id_of(storage, name: str) -> int | None:
    """The study's id in `storage`, None when there is no study of that name."""
    try:
        return storage.get_study_id_from_name(name)
    except KeyError:
        return None


# --- a trial's job -------------------------------------------------------------------------------


@dataclass
class TrialHandoff:
    """What a sweep's jobs need to find their Optuna trials, in the sweep dir (`HANDOFF_FILE`)."""

    study_name: str
    storage: str | None
    monitor: str | None = None  # the per-epoch metric reported to the trial (None: no pruning)
    pruner: dict | None = None  # the pruner's config (`_target_`, arguments), built again in the job
    trials: dict = field(default_factory=dict)  # job number (str) -> trial number
    studies: dict = field(default_factory=dict)  # job number (str) -> its study, where not `study_name` (a suite)

    def write(self, sweep_dir: Path) -> None:
        """Atomically, readable by the owner only (a storage URL may hold a password)."""
        sweep_dir.mkdir(parents=True, exist_ok=True)
        tmp = sweep_dir / f"{HANDOFF_FILE}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(asdict(self), fh)
        tmp.replace(sweep_dir / HANDOFF_FILE)

    @classmethod
    def read(cls, sweep_dir: Path) -> TrialHandoff | None:
        path = Path(sweep_dir) / HANDOFF_FILE
        return cls(**json.loads(path.read_text())) if path.is_file() else None


# lightsweep's own pruners, built from a handoff file like Optuna's (nothing else is instantiated from it)
OWN_PRUNERS = ("lightsweep.sweeps.suite.TargetPruner",)


def build_pruner(node):
    """An Optuna pruner from its config (`_target_` in optuna.pruners, or one of OWN_PRUNERS); None for
    NopPruner or none."""
    from hydra.utils import instantiate

    if not node:
        return None
    target = str(node.get("_target_", ""))
    if not (target.startswith("optuna.pruners.") or target in OWN_PRUNERS) or target.endswith(".NopPruner"):
        return None
    return instantiate(node)


def trial_for_job(sweep_dir: Path, job_num: int):
    """(trial, monitor) of job `job_num` of the sweep in `sweep_dir` when it is a trial of a study that
    prunes, else None: an `optuna.trial.Trial` on the study's storage (the job may run in another
    process or host), whose `should_prune()` asks the study's pruner."""
    handoff = TrialHandoff.read(sweep_dir)
    if handoff is None or handoff.monitor is None or handoff.storage is None:
        return None
    number = handoff.trials.get(str(job_num))
    pruner = build_pruner(OmegaConf.create(handoff.pruner)) if handoff.pruner else None
    if number is None or pruner is None:
        return None
    import optuna

    name = handoff.studies.get(str(job_num), handoff.study_name)
    storage = open_storage(handoff.storage)
    study = optuna.load_study(study_name=name, storage=storage, pruner=pruner, sampler=optuna.samplers.RandomSampler())
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(name), int(number))
    return optuna.trial.Trial(study, trial_id), handoff.monitor
