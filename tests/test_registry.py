"""MLflow models end to end (slow tier): sweeps through the CLI log their best child's model,
`pipelines/register.py` registers it as `champion`, `evaluate.py` evaluates it, a fresh process loads
it without lightsweep and gets the run's test accuracy, `mlflow models serve` answers with the same
predictions, and `kill -9` while a model is logged leaves a run that `resume=last` completes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    PYTHON,
    QUIET,
    ROOT,
    SWEEP_FAST,
    all_runs,
    assert_short_error,
    cli_env,
    free_port,
    kill_9_at,
    run_cli,
    run_sweep,
    store,
    sweep_runs,
)

pytestmark = pytest.mark.slow

# A fresh interpreter: load a registered model with MLflow alone and score the first N official test images.
FRESH = """
import json, sys
import mlflow
from torchvision.datasets import FashionMNIST
uri, n = sys.argv[1], int(sys.argv[2])
model = mlflow.pyfunc.load_model(uri)
test = FashionMNIST(sys.argv[3], train=False)
x, y = test.data.numpy()[:n], test.targets.numpy()[:n]
p = model.predict(x)
print(json.dumps({"acc": float((p.argmax(axis=1) == y).mean()), "shape": list(p.shape),
                  "lightsweep_imported": any(m.split(".")[0] == "lightsweep" for m in sys.modules)}))
"""


def fresh_process(tmp_path: Path, uri: str, n: int) -> dict:
    result = subprocess.run(
        [PYTHON, "-c", FRESH, uri, str(n), str(ROOT / "data")],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def models_of(client, experiment_id: str) -> list:
    return list(client.search_logged_models([experiment_id], max_results=100))


def best_by_validation(client, children):
    """The child whose best val/acc is highest (the test's own reading of the rule)."""

    def best(run):
        return max(m.value for m in client.get_metric_history(run.info.run_id, "val/acc"))

    return max(children, key=best)


def test_sweep_best_model_register_evaluate_fresh_process_and_serve(tmp_path):
    result = run_sweep(tmp_path, *SWEEP_FAST, "model=softmax", "optimizer=sgd,adam")
    assert result.returncode == 0, result.stderr[-3000:]
    client, (parent,), children, _ = sweep_runs(tmp_path)
    register_line = f"python pipelines/register.py sweep={parent.info.run_id}"
    assert register_line in result.stdout

    # Only the best child (by validation accuracy) has a model, logged at the sweep's end.
    (model,) = models_of(client, parent.info.experiment_id)
    best = best_by_validation(client, children)
    assert model.source_run_id == best.info.run_id and model.status.to_proto() == model.status.READY.to_proto()
    assert client.get_run(parent.info.run_id).data.tags["lightsweep.best_model"] == model.model_id
    for child in children:
        outputs = client.get_run(child.info.run_id).outputs.model_outputs
        assert [o.model_id for o in outputs] == ([model.model_id] if child.info.run_id == best.info.run_id else [])
        assert len(client.get_run(child.info.run_id).inputs.dataset_inputs) == 3

    registered = run_cli(tmp_path, "sweep=latest", script=("pipelines/register.py",))
    assert registered.returncode == 0, registered.stderr[-3000:]
    assert "Registered fashion_mnist-softmax version 1" in registered.stdout
    assert "alias champion -> version 1" in registered.stdout
    version = client.get_model_version_by_alias("fashion_mnist-softmax", "champion")
    assert version.run_id == best.info.run_id and version.tags["sweep"] == parent.info.run_id
    assert "optimizer=" in version.tags["overrides"] and float(version.tags["test/acc"]) > 0.3

    # Refusals: one line, exit 2.
    failed_id = client.create_run(parent.info.experiment_id, run_name="broken").info.run_id
    client.set_tag(failed_id, "lightsweep.failure_reason", "RuntimeError: boom")
    client.set_terminated(failed_id, "FAILED")
    for args, needle in [
        ((f"run={failed_id}",), "is FAILED (RuntimeError: boom)"),
        (("run=0123456789abcdef",), "no such MLflow run"),
        ((f"sweep={best.info.run_id}",), "not a sweep's parent run"),
    ]:
        refused = run_cli(tmp_path, *args, script=("pipelines/register.py",))
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert_short_error(refused, needle)

    uri = "models:/fashion_mnist-softmax@champion"
    evaluated = run_cli(tmp_path, f"model_uri={uri}", script=("evaluate.py",))
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    (evaluation,) = [r for r in all_runs(client) if r.data.tags.get("lightsweep.role") == "evaluation"]
    evaluation = client.get_run(evaluation.info.run_id)  # search results leave out model inputs
    assert evaluation.info.status == "FINISHED" and evaluation.data.tags["registered_version"] == "1"
    assert [m.model_id for m in evaluation.inputs.model_inputs] == [model.model_id]
    for args, needle in [
        (("model_uri=models:/fashion_mnist-softmax@nobody",), "no such model"),
        ((f"model_uri={uri}", "data=digits"), "takes uint8 (N, 28, 28) samples but data=digits"),
    ]:
        refused = run_cli(tmp_path, *args, script=("evaluate.py",))
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
        assert_short_error(refused, needle)

    # A fresh process, MLflow only: the run's test accuracy on the images its test saw (2 batches of 1024).
    fresh = fresh_process(tmp_path, uri, 2048)
    assert fresh["shape"] == [2048, 10] and not fresh["lightsweep_imported"]
    assert abs(fresh["acc"] - best.data.metrics["test/acc"]) <= 0.001

    # `mlflow models serve`, loopback only: the same predictions for a few test images.
    import mlflow
    import requests
    from torchvision.datasets import FashionMNIST

    images = FashionMNIST(str(ROOT / "data"), train=False).data.numpy()[:8]
    mlflow.set_tracking_uri(cli_env(tmp_path)["MLFLOW_TRACKING_URI"])
    expected = mlflow.pyfunc.load_model(uri).predict(images)
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    # As in an activated venv: MLflow's scoring server runs `uvicorn` from PATH.
    venv_bin = str(Path(PYTHON).parent)
    env = {**cli_env(tmp_path), "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    server = subprocess.Popen(
        [
            str(Path(PYTHON).with_name("mlflow")),
            "models",
            "serve",
            "-m",
            uri,
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow models serve did not come up"
            try:
                if requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).ok:
                    break
            except requests.RequestException:
                time.sleep(1)
        answer = requests.post(f"http://127.0.0.1:{port}/invocations", json={"inputs": images.tolist()}, timeout=60)
        assert answer.status_code == 200, answer.text[:1000]
        served = np.asarray(answer.json()["predictions"], dtype=np.float32)
        assert served.shape == (8, 10)
        assert np.allclose(served, expected, atol=1e-6) and (served.argmax(1) == expected.argmax(1)).all()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)  # its own session: the server and its uvicorn worker
        server.wait(timeout=60)
        log.close()


def test_log_models_all_and_none_then_register_logs_the_missing_model(tmp_path):
    result = run_sweep(
        tmp_path, *SWEEP_FAST, "model=softmax", "optimizer=sgd,adam", "log_models=all", "experiment_name=all"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client, _, children, _ = sweep_runs(tmp_path, "all")
    models = models_of(client, children[0].info.experiment_id)
    assert sorted(m.source_run_id for m in models) == sorted(c.info.run_id for c in children)

    result = run_sweep(
        tmp_path, *SWEEP_FAST, "model=mlp", "optimizer=sgd,adam", "log_models=none", "experiment_name=none"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client, (parent,), children, _ = sweep_runs(tmp_path, "none")
    assert models_of(client, parent.info.experiment_id) == []
    assert f"python pipelines/register.py sweep={parent.info.run_id}" in result.stdout
    registered = run_cli(
        tmp_path, "sweep=latest", "experiment_name=none", "name=clothes", script=("pipelines/register.py",)
    )
    assert registered.returncode == 0, registered.stderr[-3000:]
    assert "has no MLflow model yet: logging it from its best checkpoint" in registered.stdout
    (model,) = models_of(client, parent.info.experiment_id)
    best = best_by_validation(client, children)
    assert model.source_run_id == best.info.run_id
    assert client.get_model_version_by_alias("clothes", "champion").run_id == best.info.run_id
    fresh = fresh_process(tmp_path, "models:/clothes@champion", 2048)
    assert abs(fresh["acc"] - best.data.metrics["test/acc"]) <= 0.001


def test_a_full_run_model_scores_its_test_accuracy_in_a_fresh_process(tmp_path):
    """Full Fashion-MNIST, 2 epochs of the MLP: the logged model on all 10,000 test images."""
    result = run_cli(tmp_path, "model=mlp", "trainer.max_epochs=2", *QUIET, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    client = store(tmp_path)
    (run,) = all_runs(client)
    (output,) = run.outputs.model_outputs
    fresh = fresh_process(tmp_path, f"models:/{output.model_id}", 10_000)
    print(
        f"test/acc of the run {run.data.metrics['test/acc']:.6f}, of its MLflow model in a fresh process "
        f"{fresh['acc']:.6f}"
    )
    assert abs(fresh["acc"] - run.data.metrics["test/acc"]) <= 0.001
    assert "logged in" in result.stdout + result.stderr  # the model logging's own time, in the job log


@pytest.mark.parametrize(
    "moment",
    [
        "lightsweep.tracking.logged_models:log_model",  # about to log the model (after the test and the plots)
        "mlflow.tracking:MlflowClient.log_model_artifacts",  # the model's upload: a PENDING model exists
        "mlflow.tracking:MlflowClient.finalize_logged_model",  # uploaded and linked, not yet READY
    ],
)
def test_kill_9_while_the_model_is_logged_then_resume(tmp_path, moment):
    run_args = [
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=10",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "trainer.log_every_n_steps=5",
        *QUIET,
    ]
    kill_9_at(tmp_path, moment, *run_args, timeout=300)

    client = store(tmp_path)
    (run,) = all_runs(client)
    assert run.info.status == "RUNNING"  # never FINISHED before the model is stored
    resumed = run_cli(tmp_path, *run_args, "resume=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (after,) = all_runs(client)
    assert after.info.status == "FINISHED"
    models = models_of(client, after.info.experiment_id)
    assert [m.status.to_proto() for m in models] == [models[0].status.READY.to_proto()]  # one, whole
    assert [o.model_id for o in after.outputs.model_outputs if o.model_id == models[0].model_id]
    fresh = fresh_process(tmp_path, f"models:/{models[0].model_id}", 2048)
    assert abs(fresh["acc"] - after.data.metrics["test/acc"]) <= 0.001


def test_parallel_jobs_log_the_same_data_sets_and_the_best_model_comes_from_a_worker(tmp_path):
    """joblib, 2 workers: both jobs log the same three data sets at once (MLflow creates each once;
    the loser retries), and the sweep's end logs the best model in a reused worker."""
    result = run_sweep(
        tmp_path,
        *SWEEP_FAST,
        "model=softmax",
        "optimizer=sgd,adam,rmsprop,adagrad",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client, (parent,), children, _ = sweep_runs(tmp_path)
    assert [c.info.status for c in children] == ["FINISHED"] * 4
    digests = {
        frozenset((i.dataset.name, i.dataset.digest) for i in client.get_run(c.info.run_id).inputs.dataset_inputs)
        for c in children
    }
    assert len(digests) == 1 and len(next(iter(digests))) == 3  # the same three data sets, each logged once
    (model,) = models_of(client, parent.info.experiment_id)
    assert model.source_run_id == best_by_validation(client, children).info.run_id
    assert "Best run" in result.stdout and "at its best checkpoint): model models:/" in result.stdout


def test_ddp_logs_one_model_from_rank_0(tmp_path):
    """trainer=ddp_cpu (Lightning's spawn launcher: fit and test run in fresh processes): one model,
    logged by global rank 0 after the test, linked to the run's metrics and data sets."""
    result = run_cli(tmp_path, "trainer=ddp_cpu", "data.batch_size=128", *SWEEP_FAST, *QUIET, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    client = store(tmp_path)
    (run,) = all_runs(client)
    run = client.get_run(run.info.run_id)
    (model,) = models_of(client, run.info.experiment_id)
    assert [o.model_id for o in run.outputs.model_outputs] == [model.model_id]
    assert len(run.inputs.dataset_inputs) == 3
    assert {m.dataset_name for m in model.metrics} == {
        "fashion_mnist-train",
        "fashion_mnist-validation",
        "fashion_mnist-test",
    }
    fresh = fresh_process(tmp_path, f"models:/{model.model_id}", 1000)
    assert fresh["shape"] == [1000, 10] and fresh["acc"] > 0.5
