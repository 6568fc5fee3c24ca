"""DDP on two CPU processes (gloo), as a user runs it: one run, metrics logged once by rank 0, the
accuracy of the equivalent single-process run, and no second sweep inside a Hydra multirun. Slow tier.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from helpers import PYTHON, ROOT
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

QUIET = ["trainer.enable_progress_bar=false", "callbacks.progress_bar=null", "callbacks.model_summary=null"]


def run(tmp_path, *args, timeout=900) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/store/mlflow.db"}
    return subprocess.run(
        [PYTHON, "train.py", *args, f"paths.log_dir={tmp_path}/outputs", *QUIET],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def only_run(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path}/store/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("lightsweep").experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]  # rank 1 created none
    return client, runs[0]


def test_ddp_cpu_matches_the_single_process_run_and_logs_once(tmp_path):
    """2 ranks x batch 128 on disjoint halves of each shuffled 256-sample slice = 1 process x batch 256,
    with gradients averaged by DDP: the same training, so the same accuracy (up to float rounding)."""
    # Adam, not plain SGD at lr 0.1: that oscillates on softmax, and amplifies float-rounding differences.
    common = ["model=softmax", "optimizer=adam", "trainer.max_epochs=2", "trainer.log_every_n_steps=50", "seed=3"]
    single = run(tmp_path / "single", *common, "data.batch_size=256")
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = run(tmp_path / "ddp", *common, "trainer=ddp_cpu", "data.batch_size=128")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("MLflow run ") == 1  # rank 0 alone prints the summary

    s_client, s_run = only_run(tmp_path / "single")
    d_client, d_run = only_run(tmp_path / "ddp")
    assert d_run.info.status == "FINISHED"
    assert d_run.data.params["trainer.devices"] == "2"
    assert d_run.data.params["trainer.strategy"] == "ddp_spawn"
    for key in ("val/acc", "test/acc"):
        assert d_run.data.metrics[key] == pytest.approx(s_run.data.metrics[key], abs=0.005), key
    assert d_run.data.metrics["test/acc"] > 0.75  # it learned: full Fashion-MNIST, 2 epochs
    # Logged once: every metric has as many points as in the single-process run (rank 1 logs none).
    assert set(d_run.data.metrics) == set(s_run.data.metrics)
    for key in d_run.data.metrics:
        d_steps = [m.step for m in d_client.get_metric_history(d_run.info.run_id, key)]
        s_steps = [m.step for m in s_client.get_metric_history(s_run.info.run_id, key)]
        # ddp_spawn hands the main process no step counter back: Lightning logs the test metrics
        # (and the `epoch` point that comes with them) at step 0.
        expected = [0] if key.startswith("test/") else s_steps[:-1] + [0] if key == "epoch" else s_steps
        assert d_steps == expected, key
    # Plots are drawn in rank 0's worker, from the whole run: the epoch history, and the test
    # confusion matrix gathered over both ranks.
    artifacts = {a.path for a in d_client.list_artifacts(d_run.info.run_id, "plots")}
    assert {"plots/learning_curves.png", "plots/confusion_matrix.png", "plots/weights.png"} <= artifacts


def test_ddp_inside_a_multirun_is_one_sweep(tmp_path):
    result = run(
        tmp_path,
        "-m",
        "trainer=ddp_cpu",
        "optimizer=sgd,adam",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=10",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "trainer.log_every_n_steps=5",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = tmp_path / "outputs"
    # One sweep dir with the two job dirs and the report; no run dirs from re-launched ranks.
    assert sorted(p.name for p in outputs.iterdir()) == ["multiruns"]
    (sweep_dir,) = (outputs / "multiruns").iterdir()
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == [
        "0-optimizer=sgd",
        "1-optimizer=adam",
        "report",
    ]
    client = MlflowClient(f"sqlite:///{tmp_path}/store/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("lightsweep").experiment_id])
    parents = [r for r in runs if r.data.tags.get("lightsweep.role") == "sweep"]
    assert len(parents) == 1 and len(runs) == 3, [r.info.run_name for r in runs]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(c.info.run_name for c in children) == ["softmax-adam-lr0.001-s42", "softmax-sgd-lr0.1-s42"]
    for child in children:
        assert child.info.status == "FINISHED"
        assert len(client.get_metric_history(child.info.run_id, "val/acc")) == 2
    assert result.stdout.count("Sweep parent run ") == 1


EXIT_SCRIPT = """
import atexit, os, sys
import torch, torch.distributed as dist
from lightsweep.callbacks import ProcessGroupExit

def threads():
    return sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task"))

atexit.register(lambda: print("exit", dist.is_initialized(), threads(), flush=True))  # LIFO: runs last
dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)
gathered = [torch.zeros(3)]
dist.all_gather(gathered, torch.ones(3))
print("running", threads(), flush=True)
ProcessGroupExit().setup(None, None, "test")
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="thread names come from /proc")
def test_a_ddp_process_ends_its_gloo_threads_before_python_finalizes(tmp_path):
    """CI once saw rank 1 of a ddp_spawn test abort at exit ("terminate called without an active
    exception", SIGABRT): a gloo worker thread freed the tensors of the test metrics' last all_gather
    only once Python was finalizing, and taking the GIL there kills the thread mid-destructor. With
    the group destroyed at exit, no gloo thread is left when finalization starts."""
    result = subprocess.run(
        [PYTHON, "-c", EXIT_SCRIPT, str(tmp_path / "store")], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    running = next(line for line in result.stdout.splitlines() if line.startswith("running"))
    at_exit = next(line for line in result.stdout.splitlines() if line.startswith("exit"))
    assert "pt_gloo_runloop" in running  # the threads the fix must end
    assert at_exit.startswith("exit False")
    assert "gloo" not in at_exit, at_exit
