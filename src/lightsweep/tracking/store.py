"""Opening a tracking store and its experiment once, before any training or sweep job; MLflow's own
functions on a client's store; artifact downloads without progress bars."""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
from pathlib import Path

from lightsweep import interrupts
from lightsweep.errors import LightsweepError
from lightsweep.tracking.server import check_server
from lightsweep.tracking.uris import describe, is_server, sqlite_path, ui_command  # noqa: F401  (re-exported)


def _prepare_sqlite(db: Path) -> None:
    """Create the folder and the database file in WAL mode (parallel writers log ~30% faster)."""
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(db, timeout=30) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
    except (OSError, sqlite3.Error) as err:
        raise LightsweepError(
            f"cannot write the MLflow store {db} ({err}): make {db.parent} writable, or point "
            "MLFLOW_TRACKING_URI at another store"
        ) from err


def artifact_location(tracking_uri: str, experiment_name: str) -> str | None:
    """Local stores keep artifacts beside the database (mlruns/artifacts/<experiment>)."""
    db = sqlite_path(tracking_uri)
    if db is None:
        return None  # a tracking server decides (served artifacts)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", experiment_name).strip("_") or "experiment"
    return (db.parent / "artifacts" / slug).as_uri()


def open_store(tracking_uri: str):
    """An MlflowClient on a ready store (schema created now, in this one process)."""
    from mlflow.tracking import MlflowClient

    if not tracking_uri or "://" not in tracking_uri:
        raise LightsweepError(
            f"MLFLOW_TRACKING_URI={tracking_uri!r} is not a URI: use e.g. sqlite:///abs/path/mlflow.db "
            "or http://127.0.0.1:5000"
        )
    db = sqlite_path(tracking_uri)
    if db is not None:
        _prepare_sqlite(db)
    if is_server(tracking_uri):
        check_server(tracking_uri)  # fails in seconds with the fix, instead of minutes of retries
    try:
        # A Ctrl-C in the middle of creating the schema would leave a store nobody can open.
        with interrupts.deferred():
            client = MlflowClient(tracking_uri)
            client.search_experiments(max_results=1)  # creates/migrates the schema, checks the server
    except Exception as err:
        raise LightsweepError(
            f"cannot open the MLflow store {describe(tracking_uri)} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}): start the server or fix MLFLOW_TRACKING_URI"
        ) from err
    return client


def ensure_experiment(client, tracking_uri: str, name: str) -> str:
    """The experiment's id, created if needed (safe if another process creates it at the same time)."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            raise LightsweepError(
                f"MLflow experiment {name!r} is deleted: restore it in the UI or pass experiment_name=OTHER"
            )
        return experiment.experiment_id
    try:
        with interrupts.deferred():
            return client.create_experiment(name, artifact_location=artifact_location(tracking_uri, name))
    except MlflowException:
        experiment = client.get_experiment_by_name(name)  # lost a creation race: use the winner's
        if experiment is None:
            raise
        return experiment.experiment_id


@contextlib.contextmanager
def as_default(client):
    """MLflow's functions that take no client (`mlflow.register_model`; also the registry's SQL store,
    which looks up a version's logged model through the default client) on `client`'s store for the
    block; the default store before it comes back after it (unset if it was)."""
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")  # (mlflow.set_tracking_uri keeps it equal to its own)
    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)  # None: unset


@contextlib.contextmanager
def quiet_downloads():
    """No tqdm bar from MLflow's artifact downloads (MLflow's own switch, for this block only)."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before
