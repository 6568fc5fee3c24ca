"""Divergence: a non-finite loss stops the run early, marks it FAILED with the reason, and a sweep goes on."""

from __future__ import annotations

import pytest
from helpers import SWEEP_FAST as FAST
from helpers import artifact_paths, run_sweep, sweep_runs, tracking_uri
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


def test_a_diverging_job_is_reported_as_diverged_and_the_sweep_goes_on(tmp_path):
    result = run_sweep(tmp_path, "model=mlp", "optimizer=sgd", "optimizer.lr=0.05,1e12,0.1", *FAST)
    assert result.returncode == 1  # the sweep says that a job failed ...
    assert "3 jobs, 1 failed (1 diverged)" in result.stdout
    client, parents, children, _ = sweep_runs(tmp_path)
    status = {c.info.run_name: c.info.status for c in children}
    # ... and the jobs after the diverging one still ran.
    assert status == {
        "mlp-sgd-lr0.05-s42": "FINISHED",
        "mlp-sgd-lr1e+12-s42": "FAILED",
        "mlp-sgd-lr0.1-s42": "FINISHED",
    }
    diverged = next(c for c in children if c.info.status == "FAILED")
    assert diverged.data.tags["lightsweep.diverged"] == "true"
    assert "diverged" in diverged.data.tags["lightsweep.failure_reason"]
    assert parents[0].info.status == "FINISHED"  # not every job failed
    report = open(client.download_artifacts(parents[0].info.run_id, "report/report.md", str(tmp_path))).read()
    assert "| mlp-sgd-lr1e+12 | 1 |" in report and "yes (1/1)" in report
