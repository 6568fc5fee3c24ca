"""`hydra/launcher=slurm`: hydra-submitit-launcher's SLURM launcher, made to finish a sweep.

hydra-submitit-launcher 1.2 collects results with `[j.results()[0] for j in jobs]`: the first job
that fails raises, later jobs are not waited for, and Hydra skips `on_multirun_end` (no report, runs
left RUNNING in MLflow). This launcher submits the same SLURM job array through submitit's public
API (one array task per sweep job, the same fields and defaults), then:

- waits for every job; SLURM's accounting (`sacct`, through submitit) tells a job that died without
  writing its result from one still running. Ctrl-C or SIGTERM while waiting cancels the jobs left.
- collects each job's result. A job that failed, or died without a result (its time limit, a signal,
  out of memory, a node failure), gets its MLflow child run marked FAILED (KILLED when cancelled)
  with the reason from SLURM's accounting (a run is created for a job that died before making its
  own), and returns what a failed job returns in lightsweep (`{"failed": reason}`, or
  `objective_on_failure` when the sweep optimizes a metric): the sweeper goes on, the report is
  built, and the sweep exits 1 (MLflowSweepCallback).
- inside each job, when requeueing is off (`max_num_timeout: 0`, the default), turns submitit's
  pre-timeout signal (USR2, `signal_delay_s` before the limit) into an error, so the job ends its
  run FAILED with that reason itself instead of being killed by SLURM. The delay is capped at a third
  of the time limit (a 2-minute delay on a 1-minute limit would signal the job as it starts).
- with `max_num_timeout` > 0, a job warned by that signal (or of a preemption) is requeued at its next
  epoch's start and continues its own MLflow run from its checkpoint (lightsweep.requeue).
- asks SLURM for what the jobs' trainer needs (`task_resources`): one GPU per task on a GPU trainer,
  and for DDP (`trainer.strategy=ddp`) one task per device on each of `trainer.num_nodes` nodes.
- `wait: false` submits, records the tasks on the sweep's parent run and returns;
  `python pipelines/collect.py sweep=<parent run id>` collects them later (`collect_sweep`), as this
  launcher does when it waits.

A SLURM task runs one sweep job here; `hydra/launcher=slurm_vectorized` (slurm_vectorized_launcher.py)
plans tasks that run a vectorized group of jobs each, and shares the rest. Each child run is tagged
with its SLURM job id (`lightsweep.slurm_job_id`).
"""

# No `from __future__ import annotations`: Hydra's plugin scan executes this module outside
# sys.modules, where dataclasses cannot resolve string annotations.
import contextlib
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import DictConfig, OmegaConf

from lightsweep.requeue import TimeLimitReached

log = logging.getLogger(__name__)

LAUNCHER_KEYS = ("wait", "max_members")  # this launcher's own settings, not sbatch's
TASKS_FILE = ".lightsweep-slurm.json"  # in the sweep dir: the tasks of a sweep that did not wait for them

POLL_S = 2.0  # how often result files are looked for
SACCT_EVERY_S = 10.0  # how often SLURM's accounting is asked (one sacct call covers every job)

# SLURM's final states of a job that ended without its result, and what to say about them.
STATE_REASONS = {
    "TIMEOUT": "it ran past its time limit ({time_limit}): raise hydra.launcher.timeout_min (now {timeout_min})",
    "OUT_OF_MEMORY": "it ran out of memory: raise hydra.launcher.mem_gb (now {mem_gb})",
    "FAILED": "it {exit}",
    "NODE_FAIL": "its node failed",
    "BOOT_FAIL": "its node failed to boot",
    "DEADLINE": "it reached its deadline",
    "CANCELLED": "it was cancelled (scancel)",
    "PREEMPTED": "it was preempted",
}
KILLED_STATES = {"CANCELLED", "PREEMPTED"}  # stopped from outside: KILLED, like a Ctrl-C


@dataclass
class LightsweepSlurmQueueConf(SlurmQueueConf):
    """hydra-submitit-launcher's `submitit_slurm` fields, for lightsweep's launcher."""

    _target_: str = "hydra_plugins.lightsweep_submitit.slurm_launcher.LightsweepSlurmLauncher"
    # false: submit the tasks, record them on the sweep's parent run and return;
    # `python pipelines/collect.py sweep=<parent run id>` then waits for them and ends the sweep.
    wait: bool = True
    # hydra/launcher=slurm_vectorized: the most jobs trained together in one task (larger groups are split)
    max_members: Optional[int] = None


ConfigStore.instance().store(
    group="hydra/launcher", name="lightsweep_slurm", node=LightsweepSlurmQueueConf, provider="lightsweep"
)


@dataclass
class Task:
    """One SLURM array task: the sweep jobs it runs ((number, overrides) each), the arguments of the
    launcher's call on the node, and the jobs' composed configs (what to ask SLURM for)."""

    jobs: List[Tuple[int, List[str]]]
    args: Tuple[Any, ...]
    configs: List[Any] = field(default_factory=list)


class LightsweepSlurmLauncher(SlurmLauncher):
    """hydra-submitit-launcher's SlurmLauncher that waits for every job and collects each result."""

    # --- in each job, on its node ------------------------------------------------------------------

    def __call__(
        self,
        sweep_overrides: List[str],
        job_dir_key: str,
        job_num: int,
        job_id: str,
        singleton_state: Dict[type, Singleton],
    ) -> JobReturn:
        with self.on_node():
            return super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)

    @contextlib.contextmanager
    def on_node(self) -> Iterator[None]:
        """A task's answer to SLURM's warning signal: with `max_num_timeout` > 0, rank 0 holds it and is
        requeued at the next epoch's start (lightsweep.requeue); else the job stops with TimeLimitReached
        (its run FAILED, saying what to raise) before SLURM kills it."""
        import submitit

        from lightsweep import requeue

        sig = time_limit_signal()
        max_num_timeout = int(self.params.get("max_num_timeout") or 0)
        if not max_num_timeout:
            stop_at_time_limit(self.params)
        elif submitit.JobEnvironment().global_rank == 0:  # (other ranks: submitit's handler does nothing)
            refused = (
                f"SLURM's time limit of {self.params.get('timeout_min')} min is near (it sent {sig.name}) and the "
                f"task was requeued max_num_timeout={max_num_timeout} times already: raise "
                "hydra.launcher.timeout_min or hydra.launcher.max_num_timeout"
            )
            requeue.hold(sig, requeue_wait_s(self.params), refused)
        try:
            yield
        finally:
            requeue.release()
            signal.signal(sig, signal.SIG_IGN)  # done: only SLURM's kill is left

    # --- in the sweep's process -----------------------------------------------------------------------

    @property
    def wait(self) -> bool:
        return bool(self.params.get("wait", True))

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and len(job_overrides) > 0
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        self.check_can_submit(sweep_dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        log.info(f"Submitit 'slurm' sweep output dir : {sweep_dir}")
        tasks = self.plan_tasks(job_overrides, initial_job_idx)
        jobs = self.submit(tasks)
        arrays = ", ".join(dict.fromkeys(job.job_id.split("_")[0] for job in jobs))
        if not self.wait:
            try:
                return self.detach(jobs, tasks, arrays)
            except BaseException:  # not recorded: nobody would collect them
                cancel_unfinished(jobs)
                raise
        log.info(f"SLURM job array {arrays}: {len(jobs)} tasks; waiting for all of them")
        try:
            wait_for_all(jobs, self.params)
        except BaseException:  # Ctrl-C or SIGTERM: the sweep stops, its jobs must not run on unattended
            cancel_unfinished(jobs)
            raise
        collector = self.collector()
        returns: Dict[int, JobReturn] = {}
        for job, task in zip(jobs, tasks):
            returns.update(collector.collect(job, task))
        collector.tag_runs(jobs, tasks)
        return [returns[initial_job_idx + offset] for offset in range(len(job_overrides))]

    def check_can_submit(self, sweep_dir: Path) -> None:
        assert self.config is not None
        if shutil.which("sbatch") is None:
            fail(
                "sbatch is not on PATH: submit the sweep from a SLURM login node, or start this machine's "
                "cluster with `make slurm` and export the SLURM_CONF it prints"
            )
        if self.wait:
            return
        from lightsweep.sweeps.context import SweepContext

        sweeper = str(self.config.hydra.sweeper.get("_target_", ""))
        if not sweeper.endswith(".BasicSweeper"):
            fail(
                f"hydra.launcher.wait=false submits the jobs and returns, but the sweeper ({sweeper.rsplit('.', 1)[-1]}) "
                "needs each job's result to go on: drop hydra.launcher.wait=false"
            )
        context = SweepContext.read(sweep_dir)
        if context is None or not context.tracked:
            fail(
                "hydra.launcher.wait=false records the tasks on the sweep's MLflow parent run, but the sweep is "
                "not tracked (logger=none): use logger=mlflow_server, or drop hydra.launcher.wait=false"
            )

    def plan_tasks(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> List[Task]:
        """One task per job, numbered from `initial_job_idx` (Hydra's job numbers)."""
        tasks = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            args = (list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state())
            tasks.append(Task(jobs=[(idx, list(overrides))], args=args, configs=[self.job_config(list(overrides))]))
        return tasks

    def submit(self, tasks: List[Task]) -> List[Any]:
        """Submit `tasks` (one job array per set of resources their jobs need); their jobs, in order."""
        import submitit

        by_resources: Dict[str, List[int]] = {}
        resources = [task_resources(self.params, task.configs) for task in tasks]
        for index, needs in enumerate(resources):
            by_resources.setdefault(json.dumps(needs, sort_keys=True), []).append(index)
        jobs: List[Any] = [None] * len(tasks)
        for indices in by_resources.values():
            executor = self.executor(submitit, resources[indices[0]])
            try:
                submitted = executor.map_array(self, *zip(*[tasks[i].args for i in indices]))
            except Exception as err:  # sbatch refused: a partition, a size or a limit the cluster does not have
                cancel_unfinished([job for job in jobs if job is not None])
                first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
                p = {**self.params, **resources[indices[0]]}
                fail(
                    f"sbatch refused the sweep's jobs ({first.strip()}): fit hydra.launcher.* to the cluster "
                    f"(partition={p.get('partition')}, cpus_per_task={p.get('cpus_per_task')}, "
                    f"mem_gb={p.get('mem_gb')}, gpus_per_node={p.get('gpus_per_node')}, "
                    f"timeout_min={p.get('timeout_min')})"
                )
            for i, job in zip(indices, submitted):
                jobs[i] = job
        return jobs

    def executor(self, submitit: Any, resources: Optional[Dict[str, Any]] = None) -> Any:
        """submitit's SLURM executor with this launcher's fields (and `resources` over them), as
        hydra-submitit-launcher sets it up."""
        params = {k: v for k, v in {**self.params, **(resources or {})}.items() if k not in LAUNCHER_KEYS}
        folder = params.pop("submitit_folder")
        max_num_timeout = params.pop("max_num_timeout", 0)
        params["signal_delay_s"] = capped_signal_delay(params)
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=max_num_timeout)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
        return executor

    def job_config(self, overrides: List[str]) -> Optional[Any]:
        assert self.hydra_context is not None and self.config is not None
        try:
            return self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        except Exception:  # the job's own composition failed: the sweep's config says enough
            return self.config

    def collector(self) -> "Collector":
        assert self.config is not None
        return Collector(
            Path(str(self.config.hydra.sweep.dir)), self.params, str(self.config.hydra.job.name), self.job_config
        )

    # --- submit and walk away (wait: false) -------------------------------------------------------------

    def detach(self, jobs: List[Any], tasks: List[Task], arrays: str) -> List[JobReturn]:
        """Record the tasks (in the sweep dir and on the parent run) for `collect_sweep`; the sweep's end
        (on_multirun_end) leaves the parent RUNNING. Each job returns its task's SLURM id."""
        from lightsweep.sweeps.context import SweepContext
        from lightsweep.tracking.store import open_store

        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        context = SweepContext.read(sweep_dir)
        assert context is not None and context.tracked  # (check_can_submit)
        record = read_tasks(sweep_dir) or {
            "parent_run_id": context.parent_run_id,
            "task_name": str(self.config.hydra.job.name),
            "params": self.params,
            "finish": sweep_end_settings(self.config),
            "tasks": [],
        }
        folder = str(self.params["submitit_folder"])
        for job, task in zip(jobs, tasks):
            record["tasks"].append(
                {"slurm_job_id": job.job_id, "folder": folder, "jobs": [[n, list(o)] for n, o in task.jobs]}
            )
        write_tasks(sweep_dir, record)
        context.detached = True
        context.write(sweep_dir)
        client = open_store(context.tracking_uri)
        run_id = str(context.parent_run_id)
        client.set_tag(run_id, "lightsweep.detached", "true")
        client.set_tag(
            run_id,
            "lightsweep.slurm_arrays",
            ",".join(sorted({t["slurm_job_id"].split("_")[0] for t in record["tasks"]})),
        )
        client.log_dict(run_id, record, "slurm_tasks.json")
        print(
            f"Submitted {len(jobs)} SLURM tasks (job array {arrays}) and not waiting for them (hydra.launcher.wait=false).\n"
            f"Follow them: squeue -j {arrays.replace(', ', ',')}; their logs: {sweep_dir}/.submitit/\n"
            f"Then collect them (waits for the rest, ends the sweep, builds its report): "
            f"python pipelines/collect.py sweep={run_id}"
        )
        returns = []
        for job, task in zip(jobs, tasks):
            for num, overrides in task.jobs:
                ret = JobReturn(overrides=overrides, task_name=record["task_name"], status=JobStatus.COMPLETED)
                ret.return_value = {"submitted": job.job_id}
                returns.append(ret)
        return returns


class Collector:
    """Each job's result from its finished SLURM task; a job that failed, or whose task died, has its
    MLflow run ended FAILED (KILLED when cancelled) with the reason (its own error, else SLURM's
    accounting). Used by the launcher that waits and by `collect_sweep`."""

    def __init__(
        self,
        sweep_dir: Path,
        params: Dict[str, Any],
        task_name: str,
        job_config: Optional[Callable[[List[str]], Optional[Any]]] = None,
    ) -> None:
        self.sweep_dir, self.params, self.task_name, self.job_config = sweep_dir, params, task_name, job_config

    def collect(self, job: Any, task: Task) -> Dict[int, JobReturn]:
        """{job number: its result} for the jobs of `task` (rank 0's results for a multi-task job)."""
        rank0 = job.task(0)
        if not rank0.paths.result_pickle.exists() and str(job.state).split(" ")[0] in STATE_REASONS:
            # SLURM ended it without a result: no need for submitit's grace period (for slow shared
            # file systems, 15 s per job) before saying so.
            return self.all_failed(job, task, None)
        try:
            result = rank0.result()
        except Exception as err:  # no result (the task died), or an exception escaped the task
            return self.all_failed(job, task, err)
        results = result if isinstance(result, list) else [result]
        returns = {}
        for (num, overrides), ret in zip(task.jobs, results):
            if isinstance(ret, JobReturn) and ret.status == JobStatus.FAILED:
                try:
                    ret.return_value  # raises the job's exception
                except Exception as err:
                    ret = self.failed(job, overrides, num, err)
            elif isinstance(ret, JobReturn) and isinstance(ret.return_value, dict) and "failed" in ret.return_value:
                self.end_if_running(num, str(ret.return_value["failed"]))
            returns[num] = ret
        return returns

    def end_if_running(self, num: int, reason: str) -> None:
        """A job that failed outside its run's lifecycle (e.g. its run could not be continued) and left
        the run RUNNING: FAILED, with the job's reason."""
        from lightsweep.tracking.run import end_run

        try:
            store = self.sweep_store()
            if store is not None:
                client, context = store
                for run in self.job_runs(client, context, num):
                    if run.info.status == "RUNNING":
                        end_run(client, run.info.run_id, "FAILED", reason)
        except Exception as err:  # never let bookkeeping hide the other jobs' results
            log.warning("could not end job #%d's run in MLflow: %s", num, err)

    def all_failed(self, job: Any, task: Task, err: Optional[BaseException]) -> Dict[int, JobReturn]:
        accounting = slurm_accounting(job.job_id)
        return {num: self.failed(job, overrides, num, err, accounting) for num, overrides in task.jobs}

    def failed(
        self,
        job: Any,
        overrides: List[str],
        num: int,
        err: Optional[BaseException],
        accounting: Optional[Dict[str, str]] = None,
    ) -> JobReturn:
        """Record and return job `num`'s failure: the job's own error when it reported one, else what
        SLURM's accounting says (`err` is None when SLURM ended the job without a result)."""
        accounting = slurm_accounting(job.job_id) if accounting is None else accounting
        state = accounting.get("state") or str(job.state).split(" ")[0]
        reported = err is not None and job.task(0).paths.result_pickle.exists()
        if state in STATE_REASONS and not reported:
            status = "KILLED" if state in KILLED_STATES else "FAILED"
            p = self.params
            detail = STATE_REASONS[state].format(
                time_limit=accounting.get("time_limit") or f"{p.get('timeout_min')} min",
                timeout_min=p.get("timeout_min"),
                mem_gb=p.get("mem_gb"),
                exit=describe_exit(accounting.get("exit_code")),
            )
            reason = f"SLURM job {job.job_id} ended {state} without a result: {detail}"
        else:
            status = "FAILED"
            reason = f"SLURM job {job.job_id} ({state}) failed: {last_error_line(err) if err is not None else state}"
        log_path = job.task(0).paths.stderr
        print(f"job #{num} failed: {reason} (log: {log_path})", file=sys.stderr)
        self.record_failure(num, overrides, status, reason, {"lightsweep.slurm_state": state})
        cfg = self.job_config(overrides) if self.job_config is not None else None
        objective = cfg.get("optimized_metric") if cfg is not None else None
        result = JobReturn(overrides=overrides, cfg=cfg, task_name=self.task_name, status=JobStatus.COMPLETED)
        # What lightsweep's task returns for a failed job: the sweeper goes on (see lightsweep.cli).
        result.return_value = cfg.get("objective_on_failure", math.nan) if objective else {"failed": reason}
        return result

    # --- MLflow ---------------------------------------------------------------------------------------

    def sweep_store(self) -> Optional[Any]:
        """(client, context) of the sweep's MLflow parent run, or None when the sweep is not tracked."""
        from lightsweep.sweeps.context import SweepContext
        from lightsweep.tracking.store import open_store

        context = SweepContext.read(self.sweep_dir)
        if context is None or not context.tracked:
            return None
        return open_store(context.tracking_uri), context

    @staticmethod
    def job_runs(client: Any, context: Any, num: Optional[int] = None) -> List[Any]:
        query = f"tags.mlflow.parentRunId = '{context.parent_run_id}'"
        if num is not None:
            query += f" and tags.`lightsweep.job` = '{num}'"
        return client.search_runs([context.experiment_id], filter_string=query, max_results=10000)

    def record_failure(self, num: int, overrides: List[str], status: str, reason: str, tags: Dict[str, str]) -> None:
        """End job `num`'s child run as `status` with `reason` (created when the job died before making it)."""
        from lightsweep.tracking.params import mask_overrides
        from lightsweep.tracking.run import create_run, end_run

        try:
            store = self.sweep_store()
            if store is None:
                return
            client, context = store
            runs = self.job_runs(client, context, num)
            if not runs:
                name = f"job{num}-{tags['lightsweep.slurm_state'].lower()}"
                run_id = create_run(
                    client,
                    context.experiment_id,
                    name,
                    {
                        "mlflow.parentRunId": context.parent_run_id,
                        "lightsweep.sweep_id": context.sweep_id,
                        "lightsweep.job": str(num),
                        "lightsweep.config": name,
                        "overrides": mask_overrides(overrides),
                        "mlflow.source.name": "train.py",
                        **tags,
                    },
                )
                end_run(client, run_id, status, reason)
                return
            run = runs[0]
            for key, value in tags.items():
                client.set_tag(run.info.run_id, key, value)
            if run.info.status == "FINISHED":
                return  # the job stored everything before it died: its run stands
            own = run.data.tags.get("lightsweep.failure_reason")
            if run.info.status != "RUNNING" and own and own not in reason:
                reason = f"{reason}; the job reported: {own}"
            end_run(client, run.info.run_id, status, reason)
        except Exception as err:  # never let bookkeeping hide the other jobs' results
            log.warning("could not record job #%d's failure in MLflow: %s", num, err)

    def tag_runs(self, jobs: Sequence[Any], tasks: Sequence[Task]) -> None:
        """Each child run names its SLURM job (`sacct -j <id>`, the logs in the .submitit folder)."""
        slurm_ids = {num: job.job_id for job, task in zip(jobs, tasks) for num, _ in task.jobs}
        try:
            store = self.sweep_store()
            if store is None:
                return
            client, context = store
            for run in self.job_runs(client, context):
                num = run.data.tags.get("lightsweep.job")
                if num is not None and num.isdigit() and int(num) in slurm_ids:
                    client.set_tag(run.info.run_id, "lightsweep.slurm_job_id", slurm_ids[int(num)])
        except Exception as err:
            log.warning("could not tag the sweep's runs with their SLURM job ids: %s", err)


def fail(message: str) -> None:
    """One line naming the fix; the sweep's parent run ends FAILED (MLflowSweepCallback's atexit)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def time_limit_signal() -> signal.Signals:
    import submitit

    return signal.Signals[f"SIG{submitit.JobEnvironment.USR_SIG}"]


def stop_at_time_limit(params: Dict[str, Any]) -> None:
    """In a job: SLURM's pre-timeout signal raises TimeLimitReached (once), wherever the job is."""
    sig = time_limit_signal()
    message = (
        f"SLURM's time limit of {params.get('timeout_min')} min is near (it sent {sig.name}): the job "
        "stopped before being killed; raise hydra.launcher.timeout_min, or let it be requeued and continue "
        "(hydra.launcher.max_num_timeout=N)"
    )

    def handler(signum: int, frame: Any) -> None:
        signal.signal(sig, signal.SIG_IGN)
        raise TimeLimitReached(message)

    signal.signal(sig, handler)


def requeue_wait_s(params: Dict[str, Any]) -> int:
    """How long a warned task waits for its next epoch to start before it is requeued anyway: two thirds
    of the (capped) signal delay; the last third is for handing over and exiting before SLURM's kill."""
    return max(1, capped_signal_delay(params) * 2 // 3)


def capped_signal_delay(params: Dict[str, Any]) -> int:
    """signal_delay_s, at most a third of the time limit."""
    delay = int(params.get("signal_delay_s") or 0)
    cap = int(params.get("timeout_min") or 0) * 60 // 3
    if delay > cap:
        log.debug("signal_delay_s=%d is too long for a %s-minute limit: %d s", delay, params.get("timeout_min"), cap)
        return cap
    return delay


def task_resources(params: Dict[str, Any], configs: Sequence[Any]) -> Dict[str, Any]:
    """What a task's jobs need from SLURM beyond the launcher's settings, read from their trainer: one
    GPU per task on a GPU trainer (a vectorized group trains on one device); for DDP
    (`trainer.strategy=ddp`) SLURM starts the ranks, one task per device on each of `trainer.num_nodes`
    nodes, which Lightning's SLURM environment then reads. `hydra.launcher.*` values set to something
    else are refused (Lightning would refuse the mismatch on the node)."""
    trainers = [c.trainer for c in configs if isinstance(c, DictConfig) and c.get("trainer") is not None]
    if not trainers:
        return {}
    trainer = trainers[0]  # (a group's jobs share their trainer settings)
    accelerator = str(trainer.get("accelerator", "auto")).lower()
    strategy = str(trainer.get("strategy", "auto"))
    devices = trainer.get("devices", 1)
    num_nodes = int(trainer.get("num_nodes") or 1)
    gpu = accelerator in ("gpu", "cuda")
    needs: Dict[str, Any] = {}
    if "ddp" in strategy:
        if "spawn" in strategy or "fork" in strategy:
            fail(
                f"trainer.strategy={strategy} under SLURM: every worker it starts reads rank 0 from SLURM's "
                "environment; pass trainer.strategy=ddp (SLURM then starts one task per device)"
            )
        count = len(devices) if OmegaConf.is_list(devices) else devices
        try:
            count = int(count)
        except (TypeError, ValueError):
            count = -1
        if count <= 0:
            count = int(params.get("gpus_per_node") or 0) if gpu else 0
        if count <= 0:
            fail(
                f"trainer.devices={devices}: SLURM starts one task per device and needs their number; "
                "pass trainer.devices=N"
            )
        for key, value in (("nodes", num_nodes), ("tasks_per_node", count)):
            asked = params.get(key)
            if asked not in (None, 1) and int(asked) != value:
                fail(
                    f"hydra.launcher.{key}={asked}, but the trainer runs {value} (trainer.num_nodes={num_nodes}, "
                    f"trainer.devices={devices}): drop hydra.launcher.{key}, the trainer's settings decide"
                )
            needs[key] = value
        if gpu and params.get("gpus_per_node") is None:
            needs["gpus_per_node"] = count
    elif num_nodes > 1:
        fail(f"trainer.num_nodes={num_nodes} trains across nodes with DDP only: add trainer=ddp trainer.strategy=ddp")
    elif gpu and params.get("gpus_per_node") is None:
        needs["gpus_per_node"] = 1
    return {k: v for k, v in needs.items() if params.get(k) != v}


def sweep_end_settings(config: DictConfig) -> Dict[str, Any]:
    """What ends the sweep once its jobs have (MLflowSweepCallback's settings, log_models), for
    `collect_sweep` in a later process."""
    callback: Dict[str, Any] = {}
    for node in (config.hydra.get("callbacks") or {}).values():
        if node is not None and str(node.get("_target_", "")).endswith("MLflowSweepCallback"):
            callback = OmegaConf.to_container(node, resolve=True)  # type: ignore[assignment]
            callback.pop("_target_", None)
    from lightsweep.sweeps.hydra_callbacks import trusted_targets

    return {
        "log_models": str(config.get("log_models", "best")),
        "allowed": trusted_targets(config),
        "callback": callback,
    }


def read_tasks(sweep_dir: Path) -> Optional[Dict[str, Any]]:
    """The SLURM tasks a sweep submitted without waiting for them (wait: false), or None."""
    path = Path(sweep_dir) / TASKS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_tasks(sweep_dir: Path, record: Dict[str, Any]) -> None:
    tmp = Path(sweep_dir) / f"{TASKS_FILE}.tmp"
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(Path(sweep_dir) / TASKS_FILE)


def collect_sweep(client: Any, parent_run_id: str, wait: bool = True) -> int:
    """`pipelines/collect.py`: end a sweep whose SLURM tasks were submitted with `wait: false`, as the
    launcher that waits does: wait for every task (or, `wait=False`, only look), collect each job's
    result (the runs of tasks that failed or died without a word end FAILED/KILLED with SLURM's
    reason), then the best model, the report and the parent's end (MLflowSweepCallback). Returns the
    exit code: 0, 1 (a job failed), 3 (`wait=False` and tasks still run)."""
    import submitit

    from lightsweep.errors import LightsweepError
    from lightsweep.sweeps.context import SweepContext
    from lightsweep.sweeps.hydra_callbacks import MLflowSweepCallback

    parent = client.get_run(parent_run_id)
    sweep_dir = Path(parent.data.tags.get("lightsweep.sweep_dir", ""))
    record = read_tasks(sweep_dir) if parent.data.tags.get("lightsweep.detached") == "true" else None
    context = SweepContext.read(sweep_dir)
    rebuild = f"rebuild its report with `python pipelines/compare.py sweep={parent_run_id}`"
    if record is None or context is None:
        raise LightsweepError(
            f"sweep {parent_run_id} has no SLURM tasks to collect in {sweep_dir} (only a sweep submitted with "
            f"hydra.launcher.wait=false has): {rebuild}"
        )
    if parent.info.status != "RUNNING":
        raise LightsweepError(
            f"sweep {parent_run_id} is collected already (its parent run is {parent.info.status}): {rebuild}"
        )
    if shutil.which("sacct") is None:
        raise LightsweepError(
            "sacct is not on PATH: collect from a SLURM login node (with SLURM_CONF for a local cluster)"
        )
    tasks = [Task(jobs=[(int(n), list(o)) for n, o in t["jobs"]], args=()) for t in record["tasks"]]
    jobs = [submitit.SlurmJob(folder=t["folder"], job_id=t["slurm_job_id"]) for t in record["tasks"]]
    arrays = ",".join(dict.fromkeys(str(job.job_id).split("_")[0] for job in jobs))
    if wait:
        print(
            f"Waiting for {len(jobs)} SLURM tasks (job array {arrays}) of sweep {parent_run_id}; Ctrl-C stops waiting, not them"
        )
        wait_for_all(jobs, record["params"])
    else:
        jobs[0].get_info(mode="force")  # one sacct call for every task
        running = [job for job in jobs if not job.done()]
        if running:
            states = ", ".join(f"{job.job_id} {str(job.state).split(' ')[0]}" for job in running)
            print(f"{len(running)} of {len(jobs)} tasks have not ended ({states}): collect again later, or wait=true")
            return 3
    collector = Collector(sweep_dir, record["params"], record["task_name"])
    for job, task in zip(jobs, tasks):
        collector.collect(job, task)
    collector.tag_runs(jobs, tasks)
    callback = MLflowSweepCallback(**record["finish"]["callback"])
    failed = callback.conclude(context, sweep_dir, record["finish"]["log_models"], record["finish"]["allowed"])
    return 1 if failed and callback.exit_nonzero_on_failure else 0


def wait_for_all(jobs: Sequence[Any], params: Dict[str, Any]) -> None:
    pending = list(jobs)
    last_sacct = time.monotonic()
    warned: set = set()
    while pending:
        if time.monotonic() - last_sacct >= SACCT_EVERY_S:
            pending[0].get_info(mode="force")  # one sacct call refreshes every job's state
            last_sacct = time.monotonic()
            warn_if_never_starts(pending, params, warned)
        pending = [job for job in pending if not job.done()]
        if pending:
            time.sleep(POLL_S)


# squeue's reasons for a pending job that the cluster, as configured, will not start.
NEVER_STARTS = {
    "PartitionConfig",
    "PartitionNodeLimit",
    "PartitionTimeLimit",
    "BadConstraints",
    "InvalidAccount",
    "InvalidQOS",
    "QOSJobLimit",
}


def warn_if_never_starts(jobs: Sequence[Any], params: Dict[str, Any], warned: set) -> None:
    """Say once per reason when SLURM holds jobs it cannot start as asked (a cluster that does not
    refuse them at sbatch, without EnforcePartLimits): otherwise the sweep just waits."""
    arrays = sorted({str(job.job_id).split("_")[0] for job in jobs})
    try:
        out = subprocess.run(
            ["squeue", "-h", "-t", "PD", "-o", "%i|%r", "-j", ",".join(arrays)],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return
    for line in out.splitlines():
        job_id, _, reason = line.strip().partition("|")
        if (reason in NEVER_STARTS or reason.endswith("PerJob") or "PerJobLimit" in reason) and reason not in warned:
            warned.add(reason)
            print(
                f"warning: SLURM holds job {job_id} pending ({reason}): the cluster will not start it as asked; "
                f"fit hydra.launcher.* (partition={params.get('partition')}, cpus_per_task={params.get('cpus_per_task')}, "
                f"mem_gb={params.get('mem_gb')}, gpus_per_node={params.get('gpus_per_node')}, "
                f"timeout_min={params.get('timeout_min')}) and stop this sweep with Ctrl-C (its jobs are cancelled)",
                file=sys.stderr,
            )


def cancel_unfinished(jobs: Sequence[Any]) -> None:
    for job in jobs:
        try:
            if not job.done():
                job.cancel(check=False)
        except Exception as err:  # keep cancelling the others
            log.warning("could not cancel SLURM job %s: %s", job.job_id, err)


def slurm_accounting(job_id: str) -> Dict[str, str]:
    """SLURM's record of one job (array task): state, exit code, elapsed time, time limit. The exit
    code is that of its first step killed by a signal when there is one (srun reports a task killed
    by SIGKILL as the batch script's exit code 9, its step as signal 9)."""
    fields = ("job_id", "state", "exit_code", "elapsed", "time_limit")
    try:
        out = subprocess.run(
            ["sacct", "-j", job_id, "-n", "-P", "-o", "JobID,State,ExitCode,Elapsed,Timelimit"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    rows = [
        dict(zip(fields, line.strip().split("|"))) for line in out.splitlines() if line.count("|") == len(fields) - 1
    ]
    record = next((r for r in rows if r["job_id"] == job_id), None)
    if record is None:
        return {}
    record["state"] = record["state"].split(" ")[0]  # "CANCELLED by 0"
    signalled = [r for r in rows if r["job_id"].startswith(job_id + ".") and not r["exit_code"].endswith(":0")]
    if signalled:
        record["exit_code"] = signalled[0]["exit_code"]
    return record


def describe_exit(exit_code: Optional[str]) -> str:
    """sacct's `code:signal` in words."""
    try:
        code, sig = (int(x) for x in str(exit_code).split(":"))
    except ValueError:
        return "failed"
    if not sig:
        return f"exited with code {code}"
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = f"signal {sig}"
    if name == time_limit_signal().name:  # before the job could set its handler: a very short limit
        return f"was killed by {name}, SLURM's pre-timeout signal, as it started: raise hydra.launcher.timeout_min"
    return f"was killed by {name}"


def last_error_line(err: BaseException) -> str:
    """The last line of a job's traceback (submitit's errors carry it inside their message)."""
    lines = [line.strip() for line in str(err).splitlines()]
    lines = [line for line in lines if line and not line.startswith(("---", "You can check", "or at paths", "- /"))]
    return (lines[-1] if lines else type(err).__name__)[:1000]
