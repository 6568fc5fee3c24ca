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

Each child run is tagged with its SLURM job id (`lightsweep.slurm_job_id`).
"""

# No `from __future__ import annotations`: Hydra's plugin scan executes this module outside
# sys.modules, where dataclasses cannot resolve string annotations.
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

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


ConfigStore.instance().store(
    group="hydra/launcher", name="lightsweep_slurm", node=LightsweepSlurmQueueConf, provider="lightsweep"
)


class TimeLimitReached(Exception):
    """SLURM's pre-timeout signal arrived: the job stops (its run ends FAILED) before SLURM kills it."""


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
        if not int(self.params.get("max_num_timeout") or 0):
            stop_at_time_limit(self.params)
        try:
            return super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)
        finally:
            signal.signal(time_limit_signal(), signal.SIG_IGN)  # done: only SLURM's kill is left

    # --- in the sweep's process -----------------------------------------------------------------------

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        assert self.config is not None and len(job_overrides) > 0
        if shutil.which("sbatch") is None:
            fail(
                "sbatch is not on PATH: submit the sweep from a SLURM login node, or start this machine's "
                "cluster with `make slurm` and export the SLURM_CONF it prints"
            )
        executor = self.executor(submitit)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        log.info(f"Submitit 'slurm' sweep output dir : {sweep_dir}")
        job_params: List[Any] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        try:
            jobs = executor.map_array(self, *zip(*job_params))
        except Exception as err:  # sbatch refused: a partition, a size or a limit the cluster does not have
            first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
            p = self.params
            fail(
                f"sbatch refused the sweep's jobs ({first.strip()}): fit hydra.launcher.* to the cluster "
                f"(partition={p.get('partition')}, cpus_per_task={p.get('cpus_per_task')}, "
                f"mem_gb={p.get('mem_gb')}, gpus_per_node={p.get('gpus_per_node')}, timeout_min={p.get('timeout_min')})"
            )
        log.info(f"SLURM job array {jobs[0].job_id.split('_')[0]}: {len(jobs)} jobs; waiting for all of them")
        try:
            wait_for_all(jobs, self.params)
        except BaseException:  # Ctrl-C or SIGTERM: the sweep stops, its jobs must not run on unattended
            cancel_unfinished(jobs)
            raise
        nums = range(initial_job_idx, initial_job_idx + len(jobs))
        returns = [self.collect(job, list(o), n) for job, o, n in zip(jobs, job_overrides, nums)]
        self.tag_runs({n: job.job_id for job, n in zip(jobs, nums)})
        return returns

    def executor(self, submitit: Any) -> Any:
        """submitit's SLURM executor with this launcher's fields, as hydra-submitit-launcher sets it up."""
        params = dict(self.params)
        folder = params.pop("submitit_folder")
        max_num_timeout = params.pop("max_num_timeout", 0)
        params["signal_delay_s"] = capped_signal_delay(params)
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=max_num_timeout)
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
        return executor

    def collect(self, job: Any, overrides: List[str], num: int) -> JobReturn:
        """Job `num`'s result (rank 0's for a multi-task job), or lightsweep's value for a failed job."""
        rank0 = job.task(0)
        if not rank0.paths.result_pickle.exists() and str(job.state).split(" ")[0] in STATE_REASONS:
            # SLURM ended it without a result: no need for submitit's grace period (for slow shared
            # file systems, 15 s per job) before saying so.
            return self.failed(job, overrides, num, None)
        try:
            result = rank0.result()
        except Exception as err:  # no result (the job died), or an exception escaped the job
            return self.failed(job, overrides, num, err)
        if isinstance(result, JobReturn) and result.status == JobStatus.FAILED:
            try:
                result.return_value  # raises the job's exception
            except Exception as err:
                return self.failed(job, overrides, num, err)
        return result

    def failed(self, job: Any, overrides: List[str], num: int, err: Optional[BaseException]) -> JobReturn:
        """Record and return job `num`'s failure: the job's own error when it reported one, else what
        SLURM's accounting says (`err` is None when SLURM ended the job without a result)."""
        accounting = slurm_accounting(job.job_id)
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
        cfg = self.job_config(overrides)
        objective = cfg.get("optimized_metric") if cfg is not None else None
        result = JobReturn(
            overrides=overrides, cfg=cfg, task_name=str(self.config.hydra.job.name), status=JobStatus.COMPLETED
        )
        # What lightsweep's task returns for a failed job: the sweeper goes on (see lightsweep.cli).
        result.return_value = cfg.get("objective_on_failure", math.nan) if objective else {"failed": reason}
        return result

    def job_config(self, overrides: List[str]) -> Optional[Any]:
        assert self.hydra_context is not None and self.config is not None
        try:
            return self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        except Exception:  # the job's own composition failed: the sweep's config says enough
            return self.config

    # --- MLflow ---------------------------------------------------------------------------------------

    def sweep_store(self) -> Optional[Any]:
        """(client, context) of the sweep's MLflow parent run, or None when the sweep is not tracked."""
        from lightsweep.sweeps.context import SweepContext
        from lightsweep.tracking.store import open_store

        assert self.config is not None
        context = SweepContext.read(Path(str(self.config.hydra.sweep.dir)))
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

    def tag_runs(self, slurm_ids: Dict[int, str]) -> None:
        """Each child run names its SLURM job (`sacct -j <id>`, the logs in the .submitit folder)."""
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
        "stopped before being killed; raise hydra.launcher.timeout_min"
    )

    def handler(signum: int, frame: Any) -> None:
        signal.signal(sig, signal.SIG_IGN)
        raise TimeLimitReached(message)

    signal.signal(sig, handler)


def capped_signal_delay(params: Dict[str, Any]) -> int:
    """signal_delay_s, at most a third of the time limit."""
    delay = int(params.get("signal_delay_s") or 0)
    cap = int(params.get("timeout_min") or 0) * 60 // 3
    if delay > cap:
        log.debug("signal_delay_s=%d is too long for a %s-minute limit: %d s", delay, params.get("timeout_min"), cap)
        return cap
    return delay


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
