"""The quality bar on full Fashion-MNIST with each model's defaults (20 epochs, CPU)."""

from __future__ import annotations

import pytest
from test_cli import QUIET, run_cli, store

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "model, floor",
    [("softmax", 0.84), ("mlp", 0.89), ("logistic", 0.83)],  # logistic: T-shirt/top vs Shirt
)
def test_default_run_reaches_the_quality_bar(tmp_path, model, floor):
    result = run_cli(tmp_path, f"model={model}", *QUIET, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    client = store(tmp_path)
    (run,) = client.search_runs([client.get_experiment_by_name("lightsweep").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer.max_epochs"] == "20"
    assert run.data.metrics["test/acc"] >= floor, run.data.metrics
    if model == "logistic":
        assert run.data.params["data.classes"] == "['T-shirt/top', 'Shirt']"
