"""What a sweep's jobs need to know from the process that launched them, handed over in the sweep dir.

The launching process creates the store schema, the experiment and the parent run once, before any
job starts (parallel jobs racing to create them misfile or lose runs); jobs only receive ids. It also
records which keys the sweep varies, so run and dir names can say just that.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lightsweep.overrides import override_key, split_overrides

CONTEXT_FILE = ".lightsweep-sweep.json"


@dataclass
class SweepContext:
    sweep_id: str
    varying: list[str] = field(default_factory=list)
    tracking_uri: str | None = None
    experiment_id: str | None = None
    parent_run_id: str | None = None
    resuming: bool = False  # an interrupted sweep continued (`resume=`): jobs look for their earlier runs
    detached: bool = False  # its SLURM tasks were submitted without waiting: `pipelines/collect.py` ends it

    def write(self, sweep_dir: Path) -> None:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        tmp = sweep_dir / f"{CONTEXT_FILE}.tmp"
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(sweep_dir / CONTEXT_FILE)

    @classmethod
    def read(cls, sweep_dir: Path) -> SweepContext | None:
        path = Path(sweep_dir) / CONTEXT_FILE
        return cls(**json.loads(path.read_text())) if path.is_file() else None

    @property
    def tracked(self) -> bool:
        return self.parent_run_id is not None


def job_dirname(sweep_dir: str, override_dirname: str) -> str:
    """A job's folder name: only the overrides the sweep varies (all of them when unknown)."""
    context = SweepContext.read(Path(sweep_dir))
    items = split_overrides(override_dirname)
    if context is not None and context.varying:
        items = [i for i in items if override_key(i) in context.varying]
    return ",".join(items).replace("/", "_")


@dataclass
class JobInfo:
    sweep: SweepContext | None
    num: int
    overrides: list[str]

    @property
    def varying_overrides(self) -> list[str]:
        if self.sweep is None or not self.sweep.varying:
            return self.overrides
        return [o for o in self.overrides if override_key(o) in self.sweep.varying]


def current_job() -> JobInfo | None:
    """This process's sweep job, or None for a single run."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None
    from lightsweep.requeue import restarts

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    sweep = SweepContext.read(Path(hydra_cfg.sweep.dir))
    if sweep is not None and restarts():
        # A SLURM task requeued (a time limit, a preemption): its jobs continue their own runs in place,
        # as a resumed sweep's jobs do (lightsweep.requeue).
        sweep.resuming = True
    return JobInfo(
        sweep=sweep,
        num=int(hydra_cfg.job.num),
        overrides=list(hydra_cfg.overrides.task),
    )
