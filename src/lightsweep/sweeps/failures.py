"""A sweep's failed jobs, whether or not their MLflow run exists.

A job can fail before its run is created (a value its run's tags or name need, the store, ...); the
parent's children alone would not show it. So each job records its failure in the sweep dir, from
its own process (joblib's and SLURM's jobs run elsewhere; the sweep dir is shared with them, see
context.py), and the sweep's process counts those records together with its FAILED children: in the
summary line, the parent's `failed_jobs.json` and `lightsweep.failed_jobs` tag, and the exit code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

FAILED_DIR = ".lightsweep-failed"  # in the sweep dir: one <job num>.json per failed job
ARTIFACT = "failed_jobs.json"  # on the parent run: every failed job, with its reason


@dataclass
class FailedJob:
    job: int
    reason: str
    overrides: str = ""  # space-separated, secrets masked: what the sweep varies (a run's: all, its tag)
    run_id: str | None = None  # None: it failed before its run existed


def _this_job() -> tuple[Path, int, list[str]] | None:
    """(sweep dir, job number, the overrides the sweep varies) of the job this process runs; None
    outside a sweep job."""
    from hydra.core.hydra_config import HydraConfig

    from lightsweep.sweeps.context import current_job

    job = current_job()
    if job is None:
        return None
    return Path(str(HydraConfig.get().sweep.dir)), job.num, job.varying_overrides


def record(err: BaseException) -> None:
    """In a job's process: this job failed with `err`."""
    from lightsweep.tracking.params import mask_overrides

    job = _this_job()
    if job is None:
        return
    sweep_dir, num, overrides = job
    folder = sweep_dir / FAILED_DIR
    folder.mkdir(parents=True, exist_ok=True)
    failed = FailedJob(num, f"{type(err).__name__}: {err}".strip()[:5000], mask_overrides(overrides))
    tmp = folder / f"{num}.json.tmp"
    tmp.write_text(json.dumps(asdict(failed)))
    tmp.replace(folder / f"{num}.json")


def clear() -> None:
    """In a job's process: this job succeeded (a job run again may have failed before)."""
    job = _this_job()
    if job is not None:
        (job[0] / FAILED_DIR / f"{job[1]}.json").unlink(missing_ok=True)


def recorded(sweep_dir: Path) -> list[FailedJob]:
    """The failures the jobs recorded, by job number."""
    files = sorted((Path(sweep_dir) / FAILED_DIR).glob("*.json"), key=lambda p: int(p.stem))
    return [FailedJob(**json.loads(p.read_text())) for p in files]


def collect(sweep_dir: Path, children: list) -> list[FailedJob]:
    """Every failed job of the sweep: its FAILED children, and the recorded jobs that have no run."""
    has_run = {c.data.tags.get("lightsweep.job") for c in children}
    failed = [
        FailedJob(
            int(c.data.tags.get("lightsweep.job") or -1),
            c.data.tags.get("lightsweep.failure_reason", ""),
            c.data.tags.get("overrides", ""),
            c.info.run_id,
        )
        for c in children
        if c.info.status == "FAILED"
    ]
    failed += [f for f in recorded(sweep_dir) if str(f.job) not in has_run]
    return sorted(failed, key=lambda f: f.job)


def log(client, parent_run_id: str, failed: list[FailedJob]) -> None:
    """The parent's `lightsweep.failed_jobs` tag (how many) and `failed_jobs.json` (each, with its reason)."""
    client.set_tag(parent_run_id, "lightsweep.failed_jobs", str(len(failed)))
    if failed:
        client.log_dict(parent_run_id, [asdict(f) for f in failed], ARTIFACT)


def logged(client, parent_run_id: str) -> list[FailedJob]:
    """What `log` stored on the parent ([] for a sweep without failures, or from before it)."""
    import tempfile

    from lightsweep.tracking.store import quiet_downloads

    if not any(a.path == ARTIFACT for a in client.list_artifacts(parent_run_id)):
        return []
    with tempfile.TemporaryDirectory(prefix="lightsweep-failed-") as tmp, quiet_downloads():
        return [
            FailedJob(**f)
            for f in json.loads(Path(client.download_artifacts(parent_run_id, ARTIFACT, tmp)).read_text())
        ]
