"""Security: checkpoints load with weights_only=True; no secret reaches MLflow."""

from __future__ import annotations

import os

import torch
from helpers import QUIET, all_runs, artifact_paths, assert_short_error, cli_env, run_cli, run_sweep, store

FAST = ["debug=fast", *QUIET]


class RunsCode:
    """Unpickling this runs a shell command: what a crafted checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_is_refused_and_runs_no_code(tmp_path):
    marker = tmp_path / "code-ran"
    crafted = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {}, "payload": RunsCode(marker)}, crafted)
    result = run_cli(tmp_path, f"ckpt_path={crafted}", *FAST)
    assert_short_error(result, f"refusing to load {crafted}", "only load checkpoints you trust")
    assert not marker.exists()
    assert [r.info.status for r in all_runs(store(tmp_path))] == ["FAILED"]


SECRET_ENV = {
    "MLFLOW_TRACKING_PASSWORD": "env-secret-1",
    "GITHUB_TOKEN": "env-secret-2",
    "AWS_SECRET_ACCESS_KEY": "env-secret-3",
}
SECRET_OVERRIDES = [
    "+service.password=cli-secret-4",
    "+tags.api_token=cli-secret-5",
    "+service.db_uri=postgresql://user:cli-secret-6@db.example/mlflow",
]


def everything_logged(client, tmp_path) -> str:
    """Every param, tag and text artifact of every run in the store, as one string."""
    texts = []
    for run in all_runs(client):
        texts += [f"{k}={v}" for k, v in {**run.data.params, **run.data.tags}.items()]
        for path in artifact_paths(client, run.info.run_id):
            if path.endswith((".yaml", ".md", ".csv", ".html", ".json")):
                local = client.download_artifacts(run.info.run_id, path, str(tmp_path / "downloads"))
                texts.append(open(local).read())
    return "\n".join(texts)


def test_no_secret_from_the_environment_or_the_config_is_logged(tmp_path):
    result = run_cli(tmp_path, *SECRET_OVERRIDES, *FAST, env=cli_env(tmp_path, **SECRET_ENV))
    assert result.returncode == 0, result.stderr[-2000:]
    client = store(tmp_path)
    (run,) = all_runs(client)
    assert run.data.params["service.password"] == "***" and run.data.tags["api_token"] == "***"
    assert run.data.params["service.db_uri"] == "postgresql://user:***@db.example/mlflow"
    logged = everything_logged(client, tmp_path)
    assert "config.yaml" in artifact_paths(client, run.info.run_id)
    assert "secret-" not in logged


def test_a_sweep_logs_no_secret_either(tmp_path):
    result = run_sweep(tmp_path, "optimizer=sgd,adam", *SECRET_OVERRIDES, *FAST, env=cli_env(tmp_path, **SECRET_ENV))
    assert result.returncode == 0, result.stderr[-2000:]
    client = store(tmp_path)
    assert len(all_runs(client)) == 3  # parent + 2 children
    assert "secret-" not in everything_logged(client, tmp_path)
