"""The team tracking server for real: scripts/mlflow_server.sh starts PostgreSQL and `mlflow server`
(basic auth, served artifacts) on loopback; sweeps log to it over HTTP; the REST API shows what
arrived; the script stops both by PID. Slow tier: CI installs PostgreSQL first (scripts/team_deps.sh).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import PYTHON, ROOT
from team_helpers import SERVER_SCRIPT, free_port, http_status, pid_alive, postgres_installed, require

pytestmark = pytest.mark.slow

QUIET = ["trainer.enable_progress_bar=false", "callbacks.progress_bar=null", "callbacks.model_summary=null"]
FAST = [
    "model=softmax",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=10",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.log_every_n_steps=5",
]
ADMIN = "admin"


def script(server, command: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SERVER_SCRIPT), command], env=server.script_env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def server():
    require(postgres_installed(), "PostgreSQL", "make team-deps, or apt-get install -y postgresql")
    # Not under pytest's tmp dir: that one is private to root (0700) and PostgreSQL runs as `postgres`.
    state = Path(tempfile.mkdtemp(prefix="lightsweep-server-"))
    state.chmod(0o755)
    password = secrets.token_urlsafe(18)
    port, pg_port = free_port(), free_port()
    script_env = {
        **os.environ,
        "LIGHTSWEEP_SERVER_DIR": str(state),
        "LIGHTSWEEP_SERVER_PORT": str(port),
        "LIGHTSWEEP_PG_PORT": str(pg_port),
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,
    }
    url = f"http://127.0.0.1:{port}"
    client_env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    client_env.update(
        {"MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": ADMIN, "MLFLOW_TRACKING_PASSWORD": password}
    )
    ns = SimpleNamespace(
        state=state,
        url=url,
        password=password,
        pg_port=pg_port,
        script_env=script_env,
        client_env=client_env,
        auth=(ADMIN, password),
    )
    started = script(ns, "start")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        ns.start_output = started.stdout
        ns.pids = {name: int((state / f"{name}.pid").read_text()) for name in ("mlflow", "postgres")}
        yield ns
    finally:
        script(ns, "stop", timeout=120)
        shutil.rmtree(state, ignore_errors=True)


def api(server, method: str, endpoint: str, auth=True, **kwargs):
    import requests

    response = requests.request(
        method, f"{server.url}/api/2.0/mlflow/{endpoint}", auth=server.auth if auth else None, timeout=30, **kwargs
    )
    return response


def get_json(server, endpoint: str, **params) -> dict:
    response = api(server, "GET", endpoint, params=params)
    assert response.status_code == 200, (endpoint, response.status_code, response.text[:500])
    return response.json()


def sweep_runs(server, experiment_name: str):
    experiment = get_json(server, "experiments/get-by-name", experiment_name=experiment_name)["experiment"]
    response = api(
        server, "POST", "runs/search", json={"experiment_ids": [experiment["experiment_id"]], "max_results": 1000}
    )
    assert response.status_code == 200, response.text[:500]
    runs = response.json().get("runs", [])
    tags = lambda run: {t["key"]: t["value"] for t in run["data"].get("tags", [])}  # noqa: E731
    parents = [r for r in runs if tags(r).get("lightsweep.role") == "sweep"]
    children = [r for r in runs if "mlflow.parentRunId" in tags(r)]
    return experiment, parents, children, runs, tags


def list_artifacts(server, run_id: str, path: str = "") -> set[str]:
    out: set[str] = set()
    for item in get_json(server, "artifacts/list", run_id=run_id, path=path).get("files", []):
        out |= list_artifacts(server, run_id, item["path"]) if item["is_dir"] else {item["path"]}
    return out


def run_sweep(server, tmp_path, *overrides, env=None, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            PYTHON,
            "train.py",
            "-m",
            "logger=mlflow_server",
            f"paths.log_dir={tmp_path}/outputs",
            *QUIET,
            *FAST,
            *overrides,
        ],
        cwd=ROOT,
        env=env or server.client_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_script_starts_postgres_and_an_authenticated_server(server):
    status = script(server, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert str(server.pids["mlflow"]) in status.stdout and str(server.pids["postgres"]) in status.stdout
    assert "MLFLOW_TRACKING_URI=" + server.url in server.start_output

    # Real PostgreSQL behind it, password-protected on loopback (the script's generated password).
    import psycopg2

    with (
        psycopg2.connect(
            host="127.0.0.1", port=server.pg_port, user="mlflow", dbname="mlflow", passfile=str(server.state / "pgpass")
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT version()")
        assert cur.fetchone()[0].startswith("PostgreSQL")
        cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_name IN ('runs', 'metrics')")
        assert cur.fetchone()[0] == 2  # MLflow's schema lives in PostgreSQL
    if os.geteuid() == 0:  # PostgreSQL refuses root: the script runs it as the postgres user
        uid = next(
            line.split()[1]
            for line in Path(f"/proc/{server.pids['postgres']}/status").read_text().splitlines()
            if line.startswith("Uid:")
        )
        assert uid != "0"

    search = f"{server.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert http_status(f"{server.url}/health") == 200
    assert http_status(search) == 401  # no credentials
    assert http_status(search, auth=(ADMIN, "wrong-password-123")) == 401
    assert http_status(search, auth=server.auth) == 200
    # The admin password reached MLflow through the environment only: no file of the script holds it.
    for path in server.state.iterdir():
        if path.is_file():
            assert server.password not in path.read_text(errors="replace"), path


def test_sweep_lands_on_the_server(server, tmp_path):
    result = run_sweep(server, tmp_path, "experiment_name=team-sweep", "optimizer=sgd,adam")
    assert result.returncode == 0, result.stderr[-3000:]

    experiment, parents, children, runs, tags = sweep_runs(server, "team-sweep")
    assert len(parents) == 1 and len(children) == 2 and len(runs) == 3
    parent = parents[0]
    parent_id = parent["info"]["run_id"]
    assert parent["info"]["status"] == "FINISHED"
    assert parent["info"]["artifact_uri"].startswith("mlflow-artifacts:")  # served by the server
    assert {tags(c)["mlflow.parentRunId"] for c in children} == {parent_id}
    assert {c["info"]["run_name"] for c in children} == {"softmax-sgd-lr0.1-s42", "softmax-adam-lr0.001-s42"}
    for child in children:
        run_id = child["info"]["run_id"]
        assert child["info"]["status"] == "FINISHED"
        assert {"val/acc", "test/acc", "train/loss"} <= {m["key"] for m in child["data"]["metrics"]}
        history = get_json(server, "metrics/get-history", run_id=run_id, metric_key="val/acc")["metrics"]
        assert len(history) == 2  # one point per epoch, nothing lost over HTTP
        artifacts = list_artifacts(server, run_id)
        assert {"config.yaml", "plots/confusion_matrix.png", "plots/learning_curves.png"} <= artifacts
        assert any(p.startswith("checkpoints/") and p.endswith(".ckpt") for p in artifacts)  # the best one

    report = list_artifacts(server, parent_id, "report")
    assert {
        "report/report.md",
        "report/report.html",
        "report/summary.csv",
        "report/learning_curves.png",
        "report/test_accuracy.png",
    } <= report
    import requests

    md = requests.get(
        f"{server.url}/get-artifact",
        params={"path": "report/report.md", "run_uuid": parent_id},
        auth=server.auth,
        timeout=30,
    )
    assert md.status_code == 200
    for child in children:
        assert child["info"]["run_id"] in md.text
    # The files sit in the server's artifact store, uploaded through it.
    assert list((server.state / "artifacts").rglob("report.html"))
    # The runs are rows in PostgreSQL.
    import psycopg2

    with (
        psycopg2.connect(
            host="127.0.0.1", port=server.pg_port, user="mlflow", dbname="mlflow", passfile=str(server.state / "pgpass")
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT count(*) FROM runs WHERE experiment_id = %s", (int(experiment["experiment_id"]),))
        assert cur.fetchone()[0] == 3
    # Nothing of it is readable without credentials.
    assert api(server, "GET", "runs/get", auth=False, params={"run_id": parent_id}).status_code == 401


def test_bad_client_setup_is_one_line_naming_the_fix(server, tmp_path):
    no_credentials = {
        k: v
        for k, v in server.client_env.items()
        if not k.startswith("MLFLOW_TRACKING_USER") and k != "MLFLOW_TRACKING_PASSWORD"
    }
    single = [PYTHON, "train.py", "logger=mlflow_server", "debug=fast", f"paths.log_dir={tmp_path}", *QUIET]
    result = subprocess.run(single, cwd=ROOT, env=no_credentials, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "requires a login (401)" in result.stderr and "MLFLOW_TRACKING_PASSWORD" in result.stderr

    wrong = {**server.client_env, "MLFLOW_TRACKING_PASSWORD": "not-the-password"}
    result = run_sweep(server, tmp_path, "optimizer=sgd,adam", env=wrong)
    assert result.returncode == 2
    assert "rejected the credentials of user 'admin'" in result.stderr
    assert "Traceback" not in result.stderr


def test_submitit_sweep_jobs_in_other_processes_log_as_children(server, tmp_path):
    """hydra/launcher=submitit_local runs each job as submitit would on a cluster node: a new process
    that gets the job pickled and finds the parent run's id in the (shared) sweep dir."""
    result = run_sweep(
        server, tmp_path, "hydra/launcher=submitit_local", "experiment_name=team-submitit", "optimizer=sgd,adam"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _, parents, children, runs, tags = sweep_runs(server, "team-submitit")
    assert len(parents) == 1 and len(children) == 2 and len(runs) == 3
    parent = parents[0]
    assert parent["info"]["status"] == "FINISHED"
    assert {tags(c)["mlflow.parentRunId"] for c in children} == {parent["info"]["run_id"]}
    assert sorted(tags(c)["lightsweep.job"] for c in children) == ["0", "1"]
    assert all(c["info"]["status"] == "FINISHED" for c in children)
    assert {"report/report.html"} <= list_artifacts(server, parent["info"]["run_id"], "report")
    params = {p["key"]: p["value"] for p in parent["data"]["params"]}
    assert params["sweep.launcher"] == "LocalLauncher"
    # submitit's own job folders and logs, in the sweep dir beside the job dirs.
    sweep_dir = next((tmp_path / "outputs" / "multiruns").iterdir())
    logs = list((sweep_dir / ".submitit").rglob("*_log.out"))
    assert len(logs) == 2
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) == [
        "0-optimizer=sgd",
        "1-optimizer=adam",
        "report",
    ]


def test_models_and_registry_through_the_server(server, tmp_path, monkeypatch):
    """MLflow models on the team server: the best child's model is uploaded through the served
    artifacts, register.py registers it with the team's credentials, the alias resolves, the model
    loads in a fresh process through the server, and the registry's rows are in PostgreSQL."""
    result = run_sweep(server, tmp_path, "experiment_name=team-models", "optimizer=sgd,adam")
    assert result.returncode == 0, result.stderr[-3000:]
    experiment, (parent,), children, _, _ = sweep_runs(server, "team-models")
    for key, value in server.client_env.items():
        if key.startswith("MLFLOW_"):
            monkeypatch.setenv(key, value)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(server.url)
    (model,) = client.search_logged_models([experiment["experiment_id"]])
    best = max(children, key=lambda c: max(m.value for m in client.get_metric_history(c["info"]["run_id"], "val/acc")))
    assert model.source_run_id == best["info"]["run_id"]
    assert model.artifact_location.startswith("mlflow-artifacts:")
    assert list((server.state / "artifacts").rglob("model.pt2"))  # uploaded through the server
    assert {i.dataset.name for i in client.get_run(model.source_run_id).inputs.dataset_inputs} == {
        "fashion_mnist-train",
        "fashion_mnist-validation",
        "fashion_mnist-test",
    }

    registered = subprocess.run(
        [
            PYTHON,
            "pipelines/register.py",
            "sweep=latest",
            "experiment_name=team-models",
            "name=team-clothes",
            f"paths.log_dir={tmp_path}/outputs",
        ],
        cwd=ROOT,
        env=server.client_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert registered.returncode == 0, registered.stderr[-3000:]
    version = client.get_model_version_by_alias("team-clothes", "champion")
    assert str(version.version) == "1" and version.run_id == model.source_run_id
    load = (
        "import mlflow, numpy as np; m = mlflow.pyfunc.load_model('models:/team-clothes@champion'); "
        "print(m.predict(np.zeros((4, 28, 28), dtype=np.uint8)).shape)"
    )
    loaded = subprocess.run(
        [PYTHON, "-c", load], cwd=tmp_path, env=server.client_env, capture_output=True, text=True, timeout=600
    )
    assert loaded.returncode == 0 and loaded.stdout.strip().endswith("(4, 10)"), loaded.stderr[-3000:]
    import psycopg2

    with (
        psycopg2.connect(
            host="127.0.0.1", port=server.pg_port, user="mlflow", dbname="mlflow", passfile=str(server.state / "pgpass")
        ) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT count(*) FROM model_versions WHERE name = 'team-clothes'")
        assert cur.fetchone()[0] == 1
        cur.execute("SELECT version FROM registered_model_aliases WHERE name = 'team-clothes' AND alias = 'champion'")
        assert cur.fetchone()[0] == 1
    # The registry is no more open than the runs.
    assert api(server, "GET", "registered-models/get", auth=False, params={"name": "team-clothes"}).status_code == 401


def test_stop_ends_both_processes_by_pid(server):
    stopped = script(server, "stop", timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert not pid_alive(server.pids["mlflow"]) and not pid_alive(server.pids["postgres"])
    status = script(server, "status")
    assert status.returncode == 3 and "not running" in status.stdout
