"""Continuing an interrupted run or sweep in place, and loading checkpoints safely.

`resume=<run id>` or `resume=last` finds the MLflow run, refuses if its settings differ from this
invocation's, and restarts Lightning from the run's `last.ckpt` (written with its best checkpoint, at an
epoch's end) in the same checkpoint folder and the same MLflow run. Restarting at an epoch boundary,
with the data order seeded by epoch and the random state stored in the checkpoint, makes a resumed run
end where an uninterrupted one would. `ckpt_path=<file>` starts a new run from a checkpoint file instead.

In a sweep (`-m ... resume=last|<parent run id>`) the sweep's parent run is continued
(`find_sweep_to_resume`), and each job finds its own earlier run (`job_resume_point`): a FINISHED one is
kept as it is, another continues in place from its last checkpoint (from the start when it has none),
and a job that never started runs. A vectorized group continues from its own checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lightsweep.errors import LightsweepError

LAST = "last"
CHECKPOINT_DIR_PARAM = "callbacks.model_checkpoint.dirpath"
LAST_CHECKPOINT = "last.ckpt"


@dataclass
class ResumePoint:
    run_id: str
    checkpoint: Path | None  # the run's last.ckpt; None: it starts again from the beginning, in the same run
    checkpoint_dir: Path | None  # keeps receiving the run's checkpoints


def find_resume_point(client, experiment_id: str, resume: str, params: dict[str, str], output_dir: str) -> ResumePoint:
    """The run to continue and its last checkpoint; refuses a finished run or changed settings."""
    run = _find_run(client, experiment_id, str(resume))
    run_id = run.info.run_id
    if run.info.status == "FINISHED":
        raise LightsweepError(f"run {run_id} already finished: nothing to resume; start a new run without resume=")
    _check_same_settings(run, params, output_dir)
    folder = run.data.params.get(CHECKPOINT_DIR_PARAM)
    if folder:
        check_own_folder(run_id, folder, [params.get("paths.log_dir"), output_dir])
    checkpoint = Path(folder) / LAST_CHECKPOINT if folder else None
    if checkpoint is None or not checkpoint.is_file():
        raise LightsweepError(
            f"run {run_id} has no {LAST_CHECKPOINT} (looked in {folder or 'nowhere: checkpoints were off'}): "
            "it stopped before its first epoch ended; start it again without resume="
        )
    return ResumePoint(run_id, checkpoint, Path(folder))


def find_sweep_to_resume(client, experiment_id: str, resume: str, grid: list[str]):
    """The sweep parent run that `resume=last|<id>` continues; refuses a finished sweep or another grid."""
    from mlflow.exceptions import MlflowException

    from lightsweep.overrides import override_key

    if resume != LAST:
        try:
            parent = client.get_run(resume)
        except MlflowException:
            raise LightsweepError(
                f"resume={resume}: no such MLflow run in this store; pass a sweep's parent run id, or resume=last"
            ) from None
        if parent.data.tags.get("lightsweep.role") != "sweep":
            raise LightsweepError(f"resume={resume} is one run, not a sweep's parent run: resume it without -m")
    else:
        found = client.search_runs(
            [experiment_id],
            filter_string="tags.`lightsweep.role` = 'sweep' and attributes.status != 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        if not found:
            raise LightsweepError(
                "resume=last: no interrupted sweep in this experiment; pass resume=<parent run id> "
                "(or experiment_name=...), or start the sweep without resume="
            )
        parent = found[0]
    run_id = parent.info.run_id
    if parent.info.status == "FINISHED":
        raise LightsweepError(f"sweep {run_id} already finished: nothing to resume; start a new sweep without resume=")
    had = sorted(o for o in sweep_grid(client, parent) if override_key(o) != "resume")
    wanted = sorted(o for o in grid if override_key(o) != "resume")
    if had != wanted:
        raise LightsweepError(
            f"cannot resume sweep {run_id} with other overrides ({' '.join(wanted) or 'none'}): it ran with "
            f"{' '.join(had) or 'none'}; rerun exactly those plus resume=last"
        )
    return parent


def sweep_grid(client, parent) -> list[str]:
    """The overrides a sweep was started with (its `sweep_grid.yaml`)."""
    import tempfile

    import yaml

    from lightsweep.tracking.store import quiet_downloads

    with tempfile.TemporaryDirectory(prefix="lightsweep-grid-") as tmp, quiet_downloads():
        path = client.download_artifacts(parent.info.run_id, "sweep_grid.yaml", tmp)
        return [str(o) for o in yaml.safe_load(Path(path).read_text())["overrides"]]


def job_resume_point(client, sweep, num: int, varying: list[str], params: dict[str, str], output_dir: str):
    """(the job's run in the interrupted sweep, where it continues) or None for a job that never started;
    the point is None for a FINISHED run, which is kept as it is. `varying`: the job's overrides of the
    keys the sweep varies (masked), which its run must have: else it is another job of the grid."""
    from lightsweep.overrides import override_key

    runs = client.search_runs(
        [sweep.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{sweep.parent_run_id}' and tags.`lightsweep.job` = '{num}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    run = runs[0]
    # (as JobInfo.varying_overrides: every override when the sweep varies nothing, a one-job sweep)
    ran = sorted(
        o
        for o in run.data.tags.get("overrides", "").split(" ")
        if o and (not sweep.varying or override_key(o) in sweep.varying)
    )
    if ran != sorted(varying):
        raise LightsweepError(
            f"job {num}'s run {run.info.run_id} ran {' '.join(ran)}, not {' '.join(sorted(varying))}: resume the "
            "sweep with its own overrides, swept keys in their order"
        )
    if run.info.status == "FINISHED":
        return run, None
    _check_same_settings(run, params, output_dir)
    folder = run.data.params.get(CHECKPOINT_DIR_PARAM)
    if folder:
        check_own_folder(run.info.run_id, folder, [params.get("paths.log_dir"), output_dir])
    checkpoint = Path(folder) / LAST_CHECKPOINT if folder else None
    exists = checkpoint is not None and checkpoint.is_file()
    return run, ResumePoint(run.info.run_id, checkpoint if exists else None, Path(folder) if folder else None)


def check_own_folder(run_id: str, folder: str, roots: list) -> None:
    """The run's checkpoint folder comes from its MLflow params, which anyone who may edit the
    experiment can write: it is loaded from, and written to, only inside this invocation's outputs."""
    where = Path(folder).resolve()
    if not any(root and where.is_relative_to(Path(str(root)).resolve()) for root in roots):
        raise LightsweepError(
            f"run {run_id} keeps its checkpoints in {folder}, outside this project's outputs "
            f"(paths.log_dir={roots[0]}): a path from the tracking store is not loaded; resume with the "
            "paths.log_dir it was trained with, or start a new run without resume="
        )


def _find_run(client, experiment_id: str, resume: str):
    from mlflow.exceptions import MlflowException

    if resume != LAST:
        try:
            return client.get_run(resume)
        except MlflowException:
            raise LightsweepError(
                f"resume={resume}: no such MLflow run in this store; pass a run id from the UI, or resume=last"
            ) from None
    runs = client.search_runs(
        [experiment_id],
        filter_string="attributes.status != 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=50,
    )
    runs = [r for r in runs if r.data.tags.get("lightsweep.role") != "sweep" and CHECKPOINT_DIR_PARAM in r.data.params]
    if not runs:
        raise LightsweepError(
            "resume=last: no interrupted run with checkpoints in this experiment; pass resume=<run id> "
            "(or experiment_name=...) or start a new run"
        )
    return runs[0]


def _check_same_settings(run, params: dict[str, str], output_dir: str) -> None:
    """MLflow params are write-once; a resumed run must be the same experiment, not a new one."""
    # Paths under this invocation's output folder (and the resume keys) differ by design.
    volatile = {"resume", "ckpt_path"}
    changed = [
        key
        for key, value in params.items()
        if key not in volatile and output_dir not in value and run.data.params.get(key, value) != value
    ]
    if changed:
        shown = ", ".join(f"{k}={params[k]} (run has {run.data.params[k]})" for k in changed[:4])
        more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        original = run.data.tags.get("overrides", "")
        raise LightsweepError(
            f"cannot resume run {run.info.run_id} with changed settings: {shown}{more}; resume with the run's "
            f"own overrides ({original or 'none'}) or start a new run without resume="
        )


def load_checkpoint(path: str | Path) -> dict:
    """torch.load with weights_only=True: tensors and plain containers only, never code."""
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise LightsweepError(f"checkpoint {path} does not exist: pass an existing .ckpt file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise LightsweepError(
            f"refusing to load {path}: it holds more than weights ({str(err).splitlines()[0][:200]}); "
            "only load checkpoints you trust, saved by lightsweep or Lightning"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as err:
        raise LightsweepError(
            f"cannot read checkpoint {path} ({str(err).splitlines()[0][:200]}): it is truncated or not a checkpoint"
        ) from None


def check_checkpoint_fits(path: str | Path, model) -> None:
    """The checkpoint's weights have the model's names and shapes (else: another model's checkpoint)."""
    state = load_checkpoint(path).get("state_dict")
    if not isinstance(state, dict):
        raise LightsweepError(f"{path} is not a Lightning checkpoint (no state_dict): pass a .ckpt written by a run")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items() if hasattr(v, "shape")}
    if expected != found:
        differences = sorted(set(expected) ^ set(found)) or [k for k in expected if expected[k] != found[k]]
        raise LightsweepError(
            f"checkpoint {path} belongs to another model (differs in {', '.join(differences[:3])}): "
            "resume with the model= and model.* settings it was trained with"
        )
