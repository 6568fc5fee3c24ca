"""`hydra/launcher=vectorized`: trains a sweep's compatible jobs together, as one batched model.

This module is the launcher's generic part. `launch` first plans the sweep (`plan`): it composes every
job's config, numbered as Hydra's basic launcher numbers them, and splits the jobs into ordered units.
A unit is either one job, run exactly as Hydra's basic launcher runs it (its own output dir,
`.hydra/` files, callbacks and JobReturn), or a group of compatible jobs to be trained together.

Which jobs are compatible is decided by one hook, `group_key(sweep_config)`: jobs with the same
non-None key form a group (split into groups of at most `max_members`), None runs the job alone.
`run_group` trains a group through `lightsweep.vectorized.group` (prepare each job in its own context,
then train them as one model).

Differences from the basic launcher: every job's config is composed before the first job runs (to
group them), so a sweep whose Nth job fails to compose stops before running any job rather than
after the first N-1.
"""

# No `from __future__ import annotations`: Hydra's plugin scan executes this module outside
# sys.modules, where dataclasses cannot resolve string annotations.
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Hashable, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


@dataclass
class VectorizedLauncherConf:
    _target_: str = "hydra_plugins.lightsweep_vectorized.vectorized_launcher.VectorizedLauncher"
    # the most jobs trained together as one model (bounds a group's memory); larger groups are split
    max_members: int = 64


ConfigStore.instance().store(
    group="hydra/launcher", name="vectorized", node=VectorizedLauncherConf, provider="lightsweep"
)


@dataclass
class Job:
    """One job of the sweep: its number (hydra.job.num / id), its overrides and its composed config."""

    idx: int
    overrides: List[str]
    config: DictConfig


@dataclass
class Unit:
    """What `launch` runs in one go: one job alone (key None), or a group of jobs sharing `key`."""

    key: Optional[Hashable]
    jobs: List[Job] = field(default_factory=list)


class VectorizedLauncher(Launcher):
    def __init__(self, max_members: int = 64) -> None:
        super().__init__()
        if int(max_members) < 1:
            raise ValueError(f"hydra.launcher.max_members must be at least 1, not {max_members}")
        self.max_members = int(max_members)
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None
        self.alone_reasons: Dict[int, str] = {}  # job number -> why it could not join a group

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    # --- the extension point of the batched path -------------------------------------------------------

    def group_key(self, sweep_config: DictConfig) -> Optional[Hashable]:
        """The key of the group `sweep_config`'s job can be trained in; None: the job runs alone.

        Only lightsweep's own training task is vectorized (any other task runs job by job, as with the
        basic launcher); jobs with equal keys differ only in what each member may have of its own (its
        optimizer and every optimizer value, its schedule, its seed).
        """
        if not self.is_lightsweep_task():
            return None
        from lightsweep.vectorized.group import group_key

        task_config = OmegaConf.masked_copy(sweep_config, [k for k in sweep_config if k != "hydra"])
        key, why = group_key(task_config)
        if key is None:
            self.alone_reasons[int(sweep_config.hydra.job.num)] = why
        return key

    def is_lightsweep_task(self) -> bool:
        function = self.task_function
        return getattr(function, "__module__", None) == "lightsweep.cli" and getattr(function, "__name__", "") == "task"

    def run_group(self, unit: Unit) -> List[JobReturn]:
        """Train a group of compatible jobs as one model; one JobReturn per job, in `unit.jobs` order.

        Each job first runs through Hydra's `run_job` as any launcher's job does (its output dir,
        `.hydra/` files, Hydra's callbacks): there it is validated and its MLflow run opened. Then the
        valid members train together, and each JobReturn gets its member's result.
        """
        from lightsweep.cli import for_sweeper, guarded
        from lightsweep.vectorized.group import Member, prepare, train_group

        assert self.hydra_context is not None
        returns = [
            run_job(
                hydra_context=self.hydra_context,
                task_function=lambda cfg: guarded(cfg, prepare),
                config=job.config,
                job_dir_key="hydra.sweep.dir",
                job_subdir_key="hydra.sweep.subdir",
            )
            for job in unit.jobs
        ]
        members = [r.return_value for r in returns if isinstance(r.return_value, Member)]
        name = f"{unit.jobs[0].idx}-{unit.jobs[-1].idx}"
        if members:
            log.info("Vectorized group %s: training %d members as one model", name, len(members))
            # The command line's handling: a signal exits 130/143 with every member KILLED; an error
            # fails every member's run (train_group ends them) and the sweep goes on.
            # Its members' runs end once their figures are stored, while the next units run (`launch` waits).
            outcome = guarded(members[0].cfg, lambda _: train_group(members, name, finish_later=True), sweeping=True)
            results = iter(outcome if isinstance(outcome, list) else [outcome] * len(members))
        for job, ret in zip(unit.jobs, returns):
            if isinstance(ret.return_value, Member):
                result = next(results)
                if "failed" in result:
                    print(f"job failed: {result['failed']}", file=sys.stderr)
            elif isinstance(ret.return_value, dict):  # failed before it could join, or kept (a resumed sweep)
                result = ret.return_value
            else:
                continue  # (a JobReturn that holds an error: Hydra raises it)
            ret.return_value = for_sweeper(job.config, result)
        return returns

    # --- planning ------------------------------------------------------------------------------------

    def plan(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> List[Unit]:
        """Compose each job's config and split the jobs into units, ordered by their first job.

        Jobs are numbered `initial_job_idx`, `initial_job_idx + 1`, ... in the order of `job_overrides`
        (hydra.job.id and hydra.job.num, as the basic launcher sets them). Jobs with the same non-None
        `group_key` form groups of at most `max_members`, in sweep order, as equal in size as can be
        (70 jobs and 64 members: 35 + 35, not 64 + 6, so that neither group is left nearly empty).
        """
        assert self.hydra_context is not None and self.config is not None
        units: List[Unit] = []
        keyed: Dict[Hashable, List[Job]] = {}
        for offset, overrides in enumerate(job_overrides):
            idx = initial_job_idx + offset
            job = Job(idx=idx, overrides=list(overrides), config=self.compose(overrides, idx))
            key = self.group_key(job.config)
            if key is None:
                units.append(Unit(key=None, jobs=[job]))
            else:
                keyed.setdefault(key, []).append(job)
        for key, jobs in keyed.items():
            count = -(-len(jobs) // self.max_members)
            size, extra = divmod(len(jobs), count)
            start = 0
            for i in range(count):
                end = start + size + (i < extra)
                units.append(Unit(key=key, jobs=jobs[start:end]))
                start = end
        return sorted(units, key=lambda unit: unit.jobs[0].idx)

    def compose(self, overrides: Sequence[str], idx: int, job_id: Optional[str] = None) -> DictConfig:
        """Job `idx`'s config: the sweep's with its overrides; hydra.job.num is `idx`, hydra.job.id too
        unless given (a SLURM task's job id)."""
        assert self.hydra_context is not None and self.config is not None
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = idx if job_id is None else job_id
            sweep_config.hydra.job.num = idx
        return sweep_config

    # --- running -------------------------------------------------------------------------------------

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)

        units = self.plan(job_overrides, initial_job_idx)
        groups = [unit for unit in units if len(unit.jobs) > 1]
        log.info(
            "Vectorized launcher: %d jobs, %d groups, %d run alone",
            len(job_overrides),
            len(groups),
            len(units) - len(groups),
        )
        returns: Dict[int, JobReturn] = {}
        for unit in units:
            self.finish_drawn_runs(wait=False)
            if len(unit.jobs) > 1:
                log.info(
                    "Group of %d jobs (#%s), trained as one model:",
                    len(unit.jobs),
                    ",".join(str(j.idx) for j in unit.jobs),
                )
            elif unit.jobs[0].idx in self.alone_reasons:
                log.info("Job #%d runs alone: %s", unit.jobs[0].idx, self.alone_reasons[unit.jobs[0].idx])
            for job in unit.jobs:
                log.info("\t#%d : %s", job.idx, " ".join(filter_overrides(job.overrides)))
            if len(unit.jobs) == 1:
                results = [self.run_alone(unit.jobs[0])]
            else:
                results = self.run_group(unit)
                assert len(results) == len(unit.jobs), "run_group returns one JobReturn per job"
            for job, result in zip(unit.jobs, results):
                returns[job.idx] = result
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        self.finish_drawn_runs(wait=True)  # every run of this batch ended before the sweeper goes on
        return [returns[initial_job_idx + offset] for offset in range(len(job_overrides))]

    def finish_drawn_runs(self, wait: bool) -> None:
        """Store the figures drawn for earlier groups' members and end their runs (all of them: `wait`)."""
        if not self.is_lightsweep_task():
            return
        from lightsweep.plots.drawer import workers

        if wait:
            workers().drain()
        else:
            workers().poll()

    def run_alone(self, job: Job) -> JobReturn:
        """Run one job as Hydra's basic launcher does: in the sweep's subdir, with Hydra's callbacks."""
        assert self.hydra_context is not None and self.task_function is not None
        return run_job(
            hydra_context=self.hydra_context,
            task_function=self.task_function,
            config=job.config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
