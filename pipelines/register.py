"""Register a sweep's best run in the MLflow Model Registry: `python pipelines/register.py sweep=latest`.

The best run of a sweep is the FINISHED child with the highest validation accuracy at its best
checkpoint (never the test accuracy; in an optimizer benchmark, among the final seeded runs only).
Its MLflow model (logged now from the best checkpoint if it has none) becomes a new version of
`name` (default `<data>-<model>`), tagged with the sweep, its metrics and overrides, and the alias
(`champion`) moves to it; earlier versions stay. `run=<id>` registers one run instead.
The model is built from the run's stored config.yaml only if `lightsweep.allowlist` allows every
target it names (`allowed_targets=[...]` adds to that list).
"""

from __future__ import annotations

from omegaconf import DictConfig

from lightsweep.entry import command
from lightsweep.errors import LightsweepError


@command("register")
def main(cfg: DictConfig) -> None:
    from mlflow.exceptions import MlflowException

    from lightsweep.tracking.registry import register, registry_name
    from lightsweep.tracking.store import open_store

    try:
        client = open_store(cfg.tracking_uri)
        chosen, sweep, model = choose(client, cfg)
        run = chosen.run
        name = str(cfg.name or registry_name(run))
        extra = {"selected_by": "val/acc at the best checkpoint", "val_acc_best_checkpoint": repr(chosen.best.val_acc)}
        if sweep is not None:
            extra.update({"sweep": sweep.info.run_id, "sweep_id": sweep.data.tags.get("lightsweep.sweep_id", "")})
        version = register(client, run, model, name, str(cfg.alias), extra)
    except MlflowException as err:  # the registry refused (a name it does not allow, permissions)
        raise LightsweepError(
            f"the MLflow registry refused: {str(err).splitlines()[0]}: check name= and your permissions on the server"
        ) from None
    test = run.data.metrics.get("test/acc")
    print(
        f"Registered {name} version {version.version}: run {run.info.run_name} ({run.info.run_id}), "
        f"val/acc {chosen.best.val_acc:.4f} at its best checkpoint"
        + (f", test/acc {test:.4f}" if test is not None else "")
        + f"; alias {cfg.alias} -> version {version.version}"
    )
    uri = f"models:/{name}@{cfg.alias}"
    print(f"Load it:  mlflow.pyfunc.load_model('{uri}')")
    print(f"Evaluate: python evaluate.py model_uri={uri}")
    print(f"Serve it: mlflow models serve -m {uri} --env-manager local")


def choose(client, cfg: DictConfig):
    """(Candidate, the sweep's parent run or None, LoggedModel) for `run=` or `sweep=`."""
    from mlflow.exceptions import MlflowException

    from lightsweep.sweeps.report import find_sweep
    from lightsweep.tracking.best import Candidate, best_checkpoint, best_child
    from lightsweep.tracking.logged_models import log_from_checkpoint, run_model

    if cfg.run is not None and cfg.sweep is not None:
        raise LightsweepError("pass either sweep= or run=, not both")
    key, wanted = ("run", str(cfg.run)) if cfg.run is not None else ("sweep", str(cfg.sweep or "latest"))
    try:
        run_id = wanted if key == "run" else find_sweep(client, wanted, cfg.experiment_name)
        run = client.get_run(run_id)
    except MlflowException:
        raise LightsweepError(
            f"{key}={wanted}: no such MLflow run in this store ({describe_store(cfg)}): "
            "pass a run id from the UI, or sweep=latest"
        ) from None
    status, reason = run.info.status, run.data.tags.get("lightsweep.failure_reason")
    sweep = None
    if run.data.tags.get("lightsweep.role") == "sweep":
        sweep = run
        if status != "FINISHED":
            raise LightsweepError(
                f"sweep {run_id} is {status}"
                + (f" ({reason})" if reason else "")
                + ": register one of its FINISHED runs with run=<run id>, or finish the sweep"
            )
        chosen = best_child(client, run_id)
    else:
        if key == "sweep":
            raise LightsweepError(f"sweep={wanted} is a run, not a sweep's parent run: pass run={wanted}")
        if status != "FINISHED":
            raise LightsweepError(
                f"run {run_id} is {status}"
                + (f" ({reason})" if reason else "")
                + ": only a FINISHED run is registered; resume it (resume=<run id>) or pick another"
            )
        best = best_checkpoint(client, run)
        if best is None:
            raise LightsweepError(f"run {run_id} has no val/acc: it was not trained by lightsweep, nothing to register")
        chosen = Candidate(run, best)
    model = run_model(client, client.get_run(chosen.run.info.run_id))
    if model is None:
        print(f"Run {chosen.run.info.run_name} has no MLflow model yet: logging it from its best checkpoint")
        model = log_from_checkpoint(client, chosen.run, list(cfg.get("allowed_targets") or []))
    return chosen, sweep, model


def describe_store(cfg: DictConfig) -> str:
    from lightsweep.tracking.uris import describe

    return describe(str(cfg.tracking_uri))


if __name__ == "__main__":
    main.run()
