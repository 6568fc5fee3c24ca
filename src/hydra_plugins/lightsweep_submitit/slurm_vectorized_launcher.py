"""`hydra/launcher=slurm_vectorized`: the vectorized launcher's groups, each group one SLURM task.

Planning is the vectorized launcher's (`VectorizedLauncher.plan`: every job composed, jobs with equal
`group_key` grouped, at most `max_members` per group); submission, waiting, collection, requeueing and
`wait: false` are the SLURM launcher's (`LightsweepSlurmLauncher`). A group becomes one array task that
runs on its node what the vectorized launcher runs locally (`VectorizedLauncher.run_group`: each job's
`prepare` through Hydra's `run_job`, then one `train_group`); a job that runs alone is a task of its
own (`run_alone`). What travels is each job's number and overrides; the task composes their configs
on the node, as hydra-submitit-launcher's jobs do, with its SLURM job id as `hydra.job.id`. A task
returns one JobReturn per job, in its jobs' order.

At submission each group's memory estimate is printed (lightsweep.vectorized.memory), with a warning
when it exceeds `mem_gb`. A GPU trainer gets one GPU per task (`task_resources`).
"""

# No `from __future__ import annotations`: Hydra's plugin scan executes this module outside
# sys.modules, where dataclasses cannot resolve string annotations.
import logging
import sys
from typing import Any, Dict, List, Sequence, Tuple

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.lightsweep_submitit.slurm_launcher import LightsweepSlurmLauncher, LightsweepSlurmQueueConf, Task
from hydra_plugins.lightsweep_vectorized.vectorized_launcher import Job, Unit, VectorizedLauncher

log = logging.getLogger(__name__)


# The SLURM launcher's schema (max_members included), with this launcher as its target.
ConfigStore.instance().store(
    group="hydra/launcher",
    name="lightsweep_slurm_vectorized",
    node=LightsweepSlurmQueueConf(
        _target_="hydra_plugins.lightsweep_submitit.slurm_vectorized_launcher.SlurmVectorizedLauncher", max_members=64
    ),
    provider="lightsweep",
)


class SlurmVectorizedLauncher(LightsweepSlurmLauncher):
    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.planner = VectorizedLauncher(max_members=int(self.params.get("max_members", 64)))

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.planner.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    # --- in each task, on its node -------------------------------------------------------------------

    def __call__(  # type: ignore[override]
        self, jobs: List[Tuple[int, List[str]]], singleton_state: Dict[type, Singleton]
    ) -> List[JobReturn]:
        """Run a task's jobs: one alone, or several as one vectorized group."""
        import submitit

        from lightsweep import interrupts

        with self.on_node(), interrupts.handled():
            Singleton.set_state(singleton_state)
            setup_globals()
            job_id = str(submitit.JobEnvironment().job_id)
            composed = [
                Job(idx, list(overrides), self.planner.compose(overrides, idx, job_id)) for idx, overrides in jobs
            ]
            if len(composed) == 1:
                return [self.planner.run_alone(composed[0])]
            returns = self.planner.run_group(Unit(key=None, jobs=composed))
            self.planner.finish_drawn_runs(wait=True)  # the members' figures stored, their runs ended
            return returns

    # --- in the sweep's process -----------------------------------------------------------------------

    def plan_tasks(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> List[Task]:
        units = self.planner.plan(job_overrides, initial_job_idx)
        groups = [unit for unit in units if len(unit.jobs) > 1]
        log.info(
            "SLURM vectorized launcher: %d jobs as %d tasks (%d groups, %d jobs alone)",
            len(job_overrides),
            len(units),
            len(groups),
            len(units) - len(groups),
        )
        tasks = []
        for unit in units:
            if len(unit.jobs) > 1:
                self.announce_group(unit)
            elif unit.jobs[0].idx in self.planner.alone_reasons:
                log.info("Job #%d runs alone: %s", unit.jobs[0].idx, self.planner.alone_reasons[unit.jobs[0].idx])
            for job in unit.jobs:
                log.info("\t#%d : %s", job.idx, " ".join(filter_overrides(job.overrides)))
            jobs = [(job.idx, list(job.overrides)) for job in unit.jobs]
            tasks.append(Task(jobs=jobs, args=(jobs, Singleton.get_state()), configs=[job.config for job in unit.jobs]))
        return tasks

    def announce_group(self, unit: Unit) -> None:
        """The group's jobs and its memory estimate (a warning when it exceeds what the task asks for)."""
        from lightsweep.vectorized.memory import estimate, size

        first, last = unit.jobs[0].idx, unit.jobs[-1].idx
        try:
            needs = estimate([job.config for job in unit.jobs])
        except Exception as err:  # the jobs themselves say what is wrong with their configs, on the node
            log.info(
                "Group of %d jobs (#%d-%d), one SLURM task; no memory estimate (%s)", len(unit.jobs), first, last, err
            )
            return
        log.info("Group of %d jobs (#%d-%d), one SLURM task: %s", len(unit.jobs), first, last, needs.describe())
        mem_gb = self.params.get("mem_gb")
        if mem_gb and needs.total > float(mem_gb) * 2**30:
            print(
                f"warning: group #{first}-{last} needs about {size(needs.total)} for its tensors, more than "
                f"hydra.launcher.mem_gb={mem_gb}: raise mem_gb, or lower hydra.launcher.max_members "
                f"(now {self.planner.max_members})",
                file=sys.stderr,
            )
