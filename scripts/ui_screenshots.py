"""The README's screenshots of a real sweep in the MLflow UI (`make ui-screenshots`).

Runs a small optimizer sweep on the real Fashion-MNIST into its own sqlite store
(outputs/screenshots/), serves it with `mlflow server` on a free loopback port, and has headless
Chromium (tests/ui/mlflow_ui.mjs, the driver the UI test uses) check the pages and save:
docs/images/sweep_experiment_runs.png, sweep_metric_chart.png, sweep_report_artifact.png (the report
as the parent's artifact) and sweep_report_page.png (report.html, whole page).

    .venv/bin/python scripts/ui_screenshots.py [--epochs 5] [--out docs/images] [--reuse]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPTIMIZERS = "sgd,momentum,nesterov,adagrad,rmsprop,adam"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "screenshots")
    parser.add_argument("--reuse", action="store_true", help="reuse the last sweep in --work instead of running one")
    args = parser.parse_args()

    store = f"sqlite:///{args.work / 'store' / 'mlflow.db'}"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}, "MLFLOW_TRACKING_URI": store}
    if not args.reuse:
        shutil.rmtree(args.work, ignore_errors=True)
        sweep = [
            sys.executable,
            "train.py",
            "-m",
            f"paths.log_dir={args.work / 'outputs'}",
            "model=softmax",
            f"optimizer={OPTIMIZERS}",
            f"trainer.max_epochs={args.epochs}",
            "trainer.enable_progress_bar=false",
            "callbacks.progress_bar=null",
            "callbacks.model_summary=null",
        ]
        print("screenshots: running", " ".join(sweep[1:]), flush=True)
        subprocess.run(sweep, cwd=ROOT, env=env, check=True)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("lightsweep")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"])
    parent = next(r for r in runs if r.data.tags.get("lightsweep.role") == "sweep")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    child = next(c for c in children if "-adam-" in c.info.run_name)
    history = client.get_metric_history(child.info.run_id, "val/acc")
    last = max(history, key=lambda m: m.step).value

    report_file = Path(parent.data.tags["lightsweep.sweep_dir"]) / "report" / "report.html"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(args.work / "mlflow-server.log", "w")
    server = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "mlflow"),
            "server",
            "--backend-store-uri",
            store,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=args.work,
    )
    try:
        for _ in range(240):
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        spec = {
            "url": url,
            "experimentId": experiment.experiment_id,
            "parentName": parent.info.run_name,
            "childNames": sorted(c.info.run_name for c in children),
            "metricRunId": child.info.run_id,
            "metricRunName": child.info.run_name,
            "metric": "val/acc",
            "metricValue": repr(last),
            "reportRunId": parent.info.run_id,
            "reportFile": str(report_file),
            "out": str(args.out),
            "prefix": "sweep_",
            "widenRunNames": 160,
            "width": 1440,
            "height": 820,
        }
        driver = subprocess.run(
            ["node", str(ROOT / "tests" / "ui" / "mlflow_ui.mjs"), json.dumps(spec)],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
    print(driver.stdout[-4000:], driver.stderr[-2000:])
    return driver.returncode


if __name__ == "__main__":
    sys.exit(main())
