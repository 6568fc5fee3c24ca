"""The command line as a user runs it: real subprocesses, a real store in tmp_path."""

from __future__ import annotations

from helpers import QUIET, artifact_paths, run_cli, store


def test_cli_trains_and_prints_how_to_review(tmp_path):
    result = run_cli(tmp_path, "debug=fast", "seed=5", *QUIET)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "test/acc=" in result.stdout
    ui_line = f"mlflow ui --backend-store-uri sqlite:///{tmp_path}/store/mlflow.db"
    assert ui_line in result.stdout

    client = store(tmp_path)
    (run,) = client.search_runs([client.get_experiment_by_name("lightsweep").experiment_id])
    assert run.info.run_id in result.stdout
    assert run.info.status == "FINISHED" and run.info.run_name == "softmax-adam-s5"
    assert "debug=fast" in run.data.tags["overrides"]
    assert f"test/acc={run.data.metrics['test/acc']:.4f}" in result.stdout
    assert "plots/weights.png" in artifact_paths(client, run.info.run_id)
    # Checkpoints went to this run's own output dir.
    assert list((tmp_path / "outputs" / "runs").glob("*/checkpoints/last.ckpt"))
