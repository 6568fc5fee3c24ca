"""Divergence: a non-finite loss stops the run early and marks it FAILED with the reason."""

from __future__ import annotations

import pytest
from helpers import artifact_paths, tracking_uri
from mlflow.tracking import MlflowClient

from lightsweep.train import TrainingDiverged, train


def test_divergence_stops_the_run_and_marks_it_failed(make_cfg, tmp_path):
    cfg = make_cfg("model=mlp", "optimizer=sgd", "optimizer.lr=1e12", "trainer.max_epochs=5")
    with pytest.raises(TrainingDiverged, match="lower optimizer.lr"):
        train(cfg)
    client = MlflowClient(tracking_uri(tmp_path))
    (run,) = client.search_runs([client.get_experiment_by_name("lightsweep").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["lightsweep.diverged"] == "true"
    assert len(client.get_metric_history(run.info.run_id, "val/loss")) == 1  # stopped after epoch 1 of 5
    assert "plots/learning_curves.png" in artifact_paths(client, run.info.run_id)


# A diverging job of a sweep (a FAILED child marked diverged, the sweep goes on, the report counts it):
# test_lifecycle.py::test_jobs_failing_in_any_way_fail_their_runs_and_the_sweep_goes_on.
