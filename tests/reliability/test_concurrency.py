"""Two sweeps at once on one local sqlite store while the MLflow UI reads it."""

from __future__ import annotations

import subprocess
import threading

import pytest
from helpers import PYTHON, QUIET, ROOT, MlflowServer, cli_env, store
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

EPOCHS, STEPS = 3, 12
JOB = [
    f"trainer.max_epochs={EPOCHS}",
    f"trainer.limit_train_batches={STEPS}",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.log_every_n_steps=1",
]  # every step: the most writes


class UIReader(threading.Thread):
    """Reads the store through the UI's server the way the UI does, until told to stop."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.client = MlflowClient(url)
        self.stop, self.reads, self.errors = threading.Event(), 0, []

    def run(self):
        while not self.stop.is_set():
            try:
                experiments = [e.experiment_id for e in self.client.search_experiments()]
                for run in self.client.search_runs(experiments, max_results=50) if experiments else []:
                    self.client.get_metric_history(run.info.run_id, "train/loss")
                self.reads += 1
            except Exception as err:  # noqa: BLE001 - every failure is a finding
                self.errors.append(repr(err))
            self.stop.wait(0.2)


def test_two_sweeps_and_the_ui_on_one_store_lose_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    (tmp_path / "store").mkdir()
    ui = MlflowServer(uri, tmp_path / "store" / "artifacts").start()
    reader = UIReader(ui.url)
    reader.start()
    try:
        sweeps = {
            "a": ["optimizer=sgd,adam", "seed=1,2", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
            "b": ["model=mlp", "optimizer=momentum,rmsprop"],
        }
        processes = {
            name: subprocess.Popen(
                [PYTHON, "train.py", "-m", f"paths.log_dir={tmp_path}/outputs", *QUIET, *JOB, *grid],
                cwd=ROOT,
                env=cli_env(tmp_path),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name, grid in sweeps.items()
        }
        outputs = {name: p.communicate(timeout=900) for name, p in processes.items()}
    finally:
        reader.stop.set()
        reader.join(timeout=60)
        ui.stop()

    for name, process in processes.items():
        stdout, stderr = outputs[name]
        assert process.returncode == 0, stderr[-3000:]
        assert "database is locked" not in stdout + stderr
    assert reader.reads > 0 and reader.errors == []

    client = store(tmp_path)
    default = client.get_experiment_by_name("Default")
    assert default is None or not client.search_runs([default.experiment_id])  # nothing misfiled
    experiment = client.get_experiment_by_name("lightsweep")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = {r.info.run_id: r for r in runs if r.data.tags.get("lightsweep.role") == "sweep"}
    assert len(parents) == 2 and len(runs) == 2 + 4 + 2
    children_of = {pid: [r for r in runs if r.data.tags.get("mlflow.parentRunId") == pid] for pid in parents}
    assert sorted(len(c) for c in children_of.values()) == [2, 4]
    for pid, children in children_of.items():
        assert parents[pid].info.status == "FINISHED"
        sweep_id = parents[pid].data.tags["lightsweep.sweep_id"]
        for child in children:
            assert child.info.status == "FINISHED" and child.data.tags["lightsweep.sweep_id"] == sweep_id
            assert len(client.get_metric_history(child.info.run_id, "train/loss")) == EPOCHS * STEPS
            assert len(client.get_metric_history(child.info.run_id, "val/acc")) == EPOCHS
