"""A run's MLflow model (a LoggedModel), who logs it, and its links to the run's metrics and data sets.

A run's model is an MLflow 3 LoggedModel (the UI's Models column) of its best checkpoint's weights,
in the `pytorch` flavour saved as pt2 (`torch.export`): it loads with `mlflow.pyfunc.load_model` or
`mlflow.pytorch.load_model` without lightsweep, and without unpickling code. What it takes and returns
is tracking.serving's. It has a signature and an input example, the run's params, and is linked to
the run (an output at the best checkpoint's step) and to its metrics: validation and training at the
best checkpoint's epoch (tracking.best), test at the end, each with its data set.

Who logs it: a single run, from the process that trained (callbacks.RunArtifacts, global rank 0),
once, after the test (the module then holds the tested best weights) and before the run can end.
In a sweep (`log_models=best`, the default) the children only keep what it takes (the checkpoint,
and the input spec inside it), and the sweep's end logs the best child's model from its best
checkpoint (`log_from_checkpoint`, `sweep_best_model`); `log_models=all` makes every child log its
own, `none` no one. Registering a model is tracking.registry's.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import tempfile

from lightsweep.errors import LightsweepError
from lightsweep.tracking.best import BestCheckpoint, best_checkpoint, best_child
from lightsweep.tracking.serving import SPEC_STATE, InputSpec, serving_module
from lightsweep.tracking.store import quiet_downloads

LOG_MODELS = ("best", "all", "none")
BEST_KEYS = ("val/acc", "val/loss", "train/acc", "train/loss_epoch")  # at the best checkpoint's step
FINAL_KEYS = ("test/acc", "test/loss")  # at their last step
DATASET_OF = {"train/": "train", "val/": "val", "test/": "test"}


def check_log_models(cfg) -> None:
    value = cfg.get("log_models", "best")
    if str(value) not in LOG_MODELS:
        raise LightsweepError(
            f"log_models={value} is not one of {', '.join(LOG_MODELS)}: best (a single run's model, a "
            "sweep's best child's), all (every run's) or none"
        )


def logs_own_model(cfg, in_sweep: bool) -> bool:
    """Whether this run logs its model itself: a single run unless log_models=none; in a sweep only
    with log_models=all (by default the sweep logs its best child's at its end)."""
    mode = str(cfg.get("log_models", "best"))
    return mode == "all" or (mode == "best" and not in_sweep)


# --- logging -------------------------------------------------------------------------------------


def model_name(run) -> str:
    """A logged model's name: the run's, in the characters MLflow allows (`mlp-adam-lr0_001-s2`)."""
    return re.sub(r"[/:.%\"']", "_", run.info.run_name or "") or "model"


def log_model(client, run_id: str, net, spec: InputSpec, datasets: dict | None = None):
    """Log `net` (a copy, on the CPU in float32) as the run's MLflow model; returns the LoggedModel.

    Order: create (PENDING), upload, READY, then the run's output and the metric links. A run that
    has a READY model already (logged before a crash) keeps it, and gets its links completed; one a
    crash left PENDING is deleted (see `run_model`).
    """
    import mlflow.pytorch
    import torch
    from mlflow.entities import LoggedModelStatus
    from mlflow.models import Model

    run = client.get_run(run_id)
    best = best_checkpoint(client, run)
    datasets = datasets if datasets is not None else run_datasets(run)
    if (existing := run_model(client, run)) is not None:
        _link(client, run, existing, best, datasets)
        return existing
    module = serving_module(copy.deepcopy(net).to("cpu", torch.float32).eval(), spec)
    tags = {
        k: run.data.tags[k] for k in ("data", "model", "optimizer", "seed", "lightsweep.sweep_id") if k in run.data.tags
    }
    if best is not None:
        tags["lightsweep.best_step"], tags["lightsweep.val_acc"] = str(best.step), repr(best.val_acc)
    model = client.create_logged_model(
        run.info.experiment_id,
        name=model_name(run),
        source_run_id=run_id,
        tags=tags,
        params=dict(run.data.params),
        model_type="classifier",
    )
    try:
        with tempfile.TemporaryDirectory(prefix="lightsweep-model-") as tmp:
            path = os.path.join(tmp, "model")
            mlflow.pytorch.save_model(
                module,
                path,
                serialization_format="pt2",
                signature=spec.signature(),
                input_example=spec.example,
                pip_requirements=mlflow.pytorch.get_default_pip_requirements(),
                mlflow_model=Model(
                    artifact_path=model.artifact_location,
                    run_id=run_id,
                    model_uuid=model.model_id,
                    model_id=model.model_id,
                ),
            )
            client.log_model_artifacts(model.model_id, path)
        model = client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    except Exception:
        with contextlib.suppress(Exception):
            client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        raise
    _link(client, run, model, best, datasets)
    return model


def _link(client, run, model, best: BestCheckpoint | None, datasets: dict) -> None:
    """The run's output (the Models column) and the metric links, unless the run has them."""
    from mlflow.entities import LoggedModelOutput

    if any(o.model_id == model.model_id for o in (run.outputs.model_outputs if run.outputs else [])):
        return
    step = best.step if best is not None else 0
    link_metrics(client, run.info.run_id, model.model_id, step, datasets)
    client.log_outputs(run.info.run_id, [LoggedModelOutput(model.model_id, step=step)])


def link_metrics(client, run_id: str, model_id: str, best_step: int, datasets: dict) -> None:
    """Link the run's metric points to the model (the same points: the run's history is unchanged)."""
    from mlflow.entities import Metric

    from lightsweep.tracking.batches import log_batch

    points = []
    for key in (*BEST_KEYS, *FINAL_KEYS):
        history = client.get_metric_history(run_id, key)
        if not history:
            continue
        step = best_step if key in BEST_KEYS else max(m.step for m in history)
        dataset = next((datasets.get(s) for p, s in DATASET_OF.items() if key.startswith(p)), None)
        points += [
            Metric(
                m.key,
                m.value,
                m.timestamp,
                m.step,
                model_id=model_id,
                run_id=run_id,
                dataset_name=dataset.name if dataset else None,
                dataset_digest=dataset.digest if dataset else None,
            )
            for m in history
            if m.step == step
        ]
    log_batch(client, run_id, metrics=points)


def run_datasets(run) -> dict:
    """{split: Dataset} from the run's inputs (tracking.datasets logged them)."""
    from lightsweep.tracking.datasets import CONTEXT

    split_of = {context: split for split, context in CONTEXT.items()}
    out = {}
    for item in run.inputs.dataset_inputs if run.inputs else []:
        context = next((t.value for t in item.tags if t.key == "mlflow.data.context"), None)
        if context in split_of:
            out[split_of[context]] = item.dataset
    return out


def run_model(client, run):
    """The run's READY logged model (the newest), else None. In a resumed run, a model that a crash
    (kill -9) cut short while it was logged (still PENDING) is deleted: it is logged again whole."""
    from mlflow.entities import LoggedModelStatus

    models = client.search_logged_models(
        [run.info.experiment_id], max_results=100, filter_string=f"source_run_id = '{run.info.run_id}'"
    )
    if run.info.status == "RUNNING" and "lightsweep.resumed" in run.data.tags:
        for model in models:
            if model.status == LoggedModelStatus.PENDING:
                client.delete_logged_model(model.model_id)
    ready = [m for m in models if m.status == LoggedModelStatus.READY]
    return max(ready, key=lambda m: m.creation_timestamp) if ready else None


# --- a model logged after its run: from the best checkpoint ----------------------------------------


def log_from_checkpoint(client, run, allowed=()):
    """Log a finished run's model from its best checkpoint (a sweep's best child, register.py).

    The run's stored `config.yaml` only says which model to build, after `lightsweep.allowlist` has
    checked it (`allowed`: targets the user trusts besides); the weights and the input spec come from
    the checkpoint uploaded to the run, never from a path the config names."""
    import torch
    from omegaconf import OmegaConf

    from lightsweep import allowlist

    with tempfile.TemporaryDirectory(prefix="lightsweep-ckpt-") as tmp, quiet_downloads():
        run_id = run.info.run_id
        try:
            config = OmegaConf.load(client.download_artifacts(run_id, "config.yaml", tmp))
        except Exception as err:
            raise LightsweepError(
                f"run {run_id} has no config.yaml artifact ({err}): it was not trained by lightsweep"
            ) from None
        source = f"run {run_id}'s config.yaml"
        allowlist.check(config.get("model"), source, "model", allowed)
        state = torch.load(_best_checkpoint_file(client, run, tmp), map_location="cpu", weights_only=True)
        spec_state = (state.get("callbacks") or {}).get(SPEC_STATE)
        if not spec_state:
            raise LightsweepError(
                f"run {run_id}'s best checkpoint has no input spec (callbacks.{SPEC_STATE}): it was saved by an "
                "older lightsweep; train the run again to log its model"
            )
        model = _instantiate(config, "model", source, allowed)
        model.load_state_dict(state["state_dict"])
        return log_model(client, run_id, model.net, InputSpec.from_state(spec_state))


def _best_checkpoint_file(client, run, tmp: str) -> str:
    """The best checkpoint as uploaded to the run (downloaded: a local path the config names may
    hold any file)."""
    run_id = run.info.run_id
    files = [a.path for a in client.list_artifacts(run_id, "checkpoints") if a.path.endswith(".ckpt")]
    if not files:
        raise LightsweepError(f"run {run_id} has no best checkpoint (checkpoints/*.ckpt): it cannot give a model")
    return client.download_artifacts(run_id, files[0], tmp)


def _instantiate(config, key: str, source: str, allowed=()):
    """The run's own (resolved) `model` config, built as the run built it, once it is allowed."""
    from lightsweep import allowlist

    try:
        return allowlist.instantiate(config[key], source, key, allowed, _convert_="all")
    except allowlist.UntrustedConfig:
        raise
    except Exception as err:
        raise LightsweepError(
            f"cannot rebuild the run's {key} from its config.yaml ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}): is lightsweep at the version "
            "that trained it?"
        ) from None


# --- a sweep's end -------------------------------------------------------------------------------


def sweep_best_model(client, parent_run_id: str, mode: str = "best", allowed=()):
    """At a sweep's end: find the best child; log its model (mode=best) unless it has one already
    (`allowed`: see log_from_checkpoint). Tags the parent with the choice; returns (Candidate,
    LoggedModel or None)."""
    candidate = best_child(client, parent_run_id)
    child = candidate.run
    model = run_model(client, client.get_run(child.info.run_id))
    if model is None and mode == "best":
        model = log_from_checkpoint(client, child, allowed)
    tags = {"lightsweep.best_run": child.info.run_id, "lightsweep.best_val_acc": repr(candidate.best.val_acc)}
    if model is not None:
        tags["lightsweep.best_model"] = model.model_id
    for key, value in tags.items():
        client.set_tag(parent_run_id, key, value)
    return candidate, model


def sweep_best_model_at(tracking_uri: str, parent_run_id: str, mode: str = "best", allowed=()) -> dict:
    """`sweep_best_model` by store URI, with a plain answer: what a sweep's end runs in a process of
    its own (a joblib worker that has torch, Lightning and MLflow loaded)."""
    from lightsweep.tracking.store import open_store

    best, model = sweep_best_model(open_store(tracking_uri), parent_run_id, mode, list(allowed))
    return {
        "run_name": best.run.info.run_name or best.run.info.run_id,
        "val_acc": best.best.val_acc,
        "model_id": model.model_id if model is not None else None,
    }
