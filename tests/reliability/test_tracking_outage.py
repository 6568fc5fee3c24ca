"""A tracking server that goes away: refused clearly at start (test_bad_input), survived mid-run (here)."""

from __future__ import annotations

import subprocess
import time

import pytest
from helpers import PYTHON, QUIET, ROOT, MlflowServer, cli_env
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

EPOCHS, STEPS, EVERY = 30, 50, 5


def test_a_30_second_outage_mid_run_loses_nothing(tmp_path):
    server = MlflowServer(f"sqlite:///{tmp_path}/server.db", tmp_path / "artifacts").start()
    try:
        training = subprocess.Popen(
            [
                PYTHON,
                "train.py",
                f"paths.log_dir={tmp_path}/outputs",
                *QUIET,
                f"trainer.max_epochs={EPOCHS}",
                f"trainer.limit_train_batches={STEPS}",
                "trainer.limit_val_batches=2",
                "trainer.limit_test_batches=2",
                f"trainer.log_every_n_steps={EVERY}",
            ],
            cwd=ROOT,
            env=cli_env(tmp_path, MLFLOW_TRACKING_URI=server.url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        client = MlflowClient(server.url)
        deadline = time.monotonic() + 240
        while True:  # wait until the run is logging epochs
            assert training.poll() is None and time.monotonic() < deadline, training.communicate()
            runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
            if runs and len(client.get_metric_history(runs[0].info.run_id, "val/acc")) >= 2:
                break
            time.sleep(0.5)
        run_id = runs[0].info.run_id

        server.stop()
        time.sleep(30)
        assert training.poll() is None  # still waiting for the server, not crashed
        server.start()

        stdout, stderr = training.communicate(timeout=600)
        assert training.returncode == 0, stderr[-3000:]
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert {m.step for m in client.get_metric_history(run_id, "val/acc")} == {
            STEPS * (epoch + 1) - 1 for epoch in range(EPOCHS)
        }
        assert len({m.step for m in client.get_metric_history(run_id, "train/loss")}) == EPOCHS * STEPS // EVERY
        assert "test/acc" in run.data.metrics
        assert any(a.path == "checkpoints" for a in client.list_artifacts(run_id))
    finally:
        server.stop()
