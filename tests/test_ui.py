"""The MLflow UI of a finished sweep, reviewed in a real browser (Debian's headless Chromium driven
by playwright-core): the experiment page lists the parent run and, once it is expanded, its children;
the best child's Models cell links its logged model and its Dataset cell names its data sets; the
logged model's page lists its metrics with their data sets; the registered model's page shows the
version and its alias `champion`; a child's metric chart page draws val/acc; the parent's report.html
renders as an artifact.
Screenshots land in test-artifacts/ui/ (git-ignored) for a reviewer. Slow tier.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from helpers import PYTHON, ROOT
from mlflow.tracking import MlflowClient
from team_helpers import ARTIFACTS, UI_DRIVER, browser_installed, plain_mlflow_server, require

pytestmark = pytest.mark.slow

SWEEP = [
    "model=softmax",
    "optimizer=sgd,momentum,adam",
    "trainer.max_epochs=3",
    "trainer.limit_train_batches=10",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.log_every_n_steps=5",
    "trainer.enable_progress_bar=false",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
]


def test_sweep_in_the_mlflow_ui(tmp_path):
    require(
        browser_installed(),
        "Chromium with playwright-core (tests/ui)",
        "make team-deps: apt-get install chromium, npm ci --prefix tests/ui",
    )
    store = f"sqlite:///{tmp_path}/store/mlflow.db"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}, "MLFLOW_TRACKING_URI": store}
    result = subprocess.run(
        [PYTHON, "train.py", "-m", f"paths.log_dir={tmp_path}/outputs", *SWEEP],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]

    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("lightsweep")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("lightsweep.role") == "sweep"]
    children = sorted(
        (r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id), key=lambda r: r.info.run_name
    )
    assert len(children) == 3
    child = next(c for c in children if "adam" in c.info.run_name)
    history = client.get_metric_history(child.info.run_id, "val/acc")
    assert len(history) == 3
    last = max(history, key=lambda m: m.step).value

    # The sweep logged its best child's model; register it as the champion.
    (logged,) = client.search_logged_models([experiment.experiment_id])
    best = client.get_run(logged.source_run_id)
    registered = subprocess.run(
        [PYTHON, "pipelines/register.py", "sweep=latest", f"paths.log_dir={tmp_path}/outputs"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert registered.returncode == 0, registered.stderr[-3000:]
    version = client.get_model_version_by_alias("fashion_mnist-softmax", "champion")

    out = ARTIFACTS / "ui"
    for old in out.glob("*.png"):
        old.unlink()
    with plain_mlflow_server(store, out / "mlflow-server.log") as url:
        spec = {
            "url": url,
            "experimentId": experiment.experiment_id,
            "parentName": parent.info.run_name,
            "childNames": [c.info.run_name for c in children],
            "metricRunId": child.info.run_id,
            "metricRunName": child.info.run_name,
            "metric": "val/acc",
            "metricValue": repr(last),
            "reportRunId": parent.info.run_id,
            "out": str(out),
            "widenRunNames": 160,
            "model": {
                "runName": best.info.run_name,
                "name": logged.name,
                "id": logged.model_id,
                "dataset": "fashion_mnist-train",
                "metricDataset": "fashion_mnist-validation",
                "registered": {"name": "fashion_mnist-softmax", "alias": "champion", "version": str(version.version)},
            },
        }
        report = drive_ui(spec)
    assert len(report["checks"]) >= 17
    for name in ("experiment_runs", "logged_model", "registered_model", "metric_chart", "report_artifact"):
        png = out / f"{name}.png"
        assert png.is_file() and png.stat().st_size > 10_000, png
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print(f"screenshots: {', '.join(report['screenshots'])}")


def test_optimizer_suite_report_in_the_mlflow_ui(tmp_path):
    """The smoke optimizer suite reviewed in the UI: its parent with the timing runs and trials under it, a
    trial's val/acc chart, the parent's report.html and its performance-profile plot as artifacts, and the
    parent's score/<optimizer> metrics on its page."""
    require(
        browser_installed(),
        "Chromium with playwright-core (tests/ui)",
        "make team-deps: apt-get install chromium, npm ci --prefix tests/ui",
    )
    store = f"sqlite:///{tmp_path}/store/mlflow.db"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}, "MLFLOW_TRACKING_URI": store}
    quiet = SWEEP[-3:]
    result = subprocess.run(
        [PYTHON, "train.py", "experiment=optimizer_suite", "suite=smoke", f"paths.log_dir={tmp_path}/outputs", *quiet],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("optimizer_suite")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    (parent,) = [r for r in runs if r.data.tags.get("lightsweep.role") == "sweep"]
    names = sorted(r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id)
    trial = next(r for r in runs if r.info.run_name == "digits_mlp-nadamw-s0-t0")
    last = max(client.get_metric_history(trial.info.run_id, "val/acc"), key=lambda m: m.step).value
    scores = sorted(k for k in parent.data.metrics if k.startswith("score/"))
    assert scores == ["score/muon", "score/nadamw", "score/schedulefree_adamw"]

    out = ARTIFACTS / "ui"
    for old in out.glob("suite_*.png"):
        old.unlink()
    with plain_mlflow_server(store, out / "mlflow-server-suite.log") as url:
        spec = {
            "url": url,
            "experimentId": experiment.experiment_id,
            "parentName": parent.info.run_name,
            "childNames": [n for n in names if n.startswith("digits_mlp-") and "-s0-t0" in n],
            "metricRunId": trial.info.run_id,
            "metricRunName": trial.info.run_name,
            "metric": "val/acc",
            "metricValue": repr(last),
            "reportRunId": parent.info.run_id,
            "artifactImages": ["report/performance_profile.png"],
            "runPage": {"runId": parent.info.run_id, "texts": scores, "name": "parent_scores"},
            "out": str(out),
            "prefix": "suite_",
            "widenRunNames": 160,
        }
        report = drive_ui(spec)
    for name in ("experiment_runs", "metric_chart", "report_artifact", "performance_profile_artifact", "parent_scores"):
        png = out / f"suite_{name}.png"
        assert png.is_file() and png.stat().st_size > 10_000, png
    print(f"screenshots: {', '.join(report['screenshots'])}")


def drive_ui(spec: dict) -> dict:
    """Run the headless-Chromium driver on `spec`; its report, every check of which passed."""
    driver = subprocess.run(
        ["node", str(UI_DRIVER), json.dumps(spec)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "MLFLOW_TRACKING_USERNAME": ""},
    )
    lines = [line for line in driver.stdout.splitlines() if line.startswith("{")]
    assert lines, driver.stdout[-2000:] + driver.stderr[-2000:]
    report = json.loads(lines[-1])
    failed = [c for c in report["checks"] if not c["ok"]]
    assert report["ok"] and not failed, (failed, report["screenshots"], driver.stderr[-2000:])
    return report
