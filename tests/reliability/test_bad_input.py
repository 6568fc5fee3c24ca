"""Bad input: one clear line naming the fix, exit code != 0, no run left RUNNING, nothing half-written.

Each case runs the real CLI in a subprocess against a real sqlite store in tmp_path.
"""

from __future__ import annotations

import os
import shutil

import pytest
from helpers import (
    DEBIAN_COPY,
    QUIET,
    SWEEP_FAST,
    all_runs,
    assert_short_error,
    cli_env,
    free_port,
    needs_fashion_mnist,
    run_cli,
    run_sweep,
    store,
    sweep_runs,
)

FAST = ["debug=fast", *QUIET]


def store_state(tmp_path) -> list[str]:
    """Statuses of every run in the store ([] when the store was never created)."""
    if not (tmp_path / "store" / "mlflow.db").exists():
        return []
    return [r.info.status for r in all_runs(store(tmp_path))]


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["model=resnet"], "model/resnet"),
        (["optimizer.lr=-1"], "optimizer.lr must be > 0"),
        (["optimizer.lr=abc"], "optimizer.lr must be a number"),
        (["model=mlp", "model.hidden_sizes=[]"], "model.hidden_sizes must be a non-empty list"),
        (["data.val_size=1.5"], "data.val_size must be < 1"),
        (["trainer.max_epochs=0"], "trainer.max_epochs must be > 0"),
        (["model=logistic", "data.classes=[0,1,2]"], "the binary model needs 2 classes"),
        (["resume=last", "logger=none"], "pass ckpt_path=<file> instead"),
        (["scheduler=step", "scheduler.step_size=0"], "scheduler.step_size must be > 0"),
        (["data=iris", "data.classes=[setosa,rose]"], "unknown class 'rose'"),
    ],
    ids=[
        "unknown-option",
        "negative-lr",
        "text-lr",
        "no-hidden-layers",
        "val-size-fraction",
        "zero-epochs",
        "binary-on-3-classes",
        "resume-untracked",
        "zero-step-size",
        "unknown-iris-class",
    ],
)
def test_bad_config_is_refused_before_any_run(tmp_path, overrides, needle):
    result = run_cli(tmp_path, *overrides, *FAST)
    assert_short_error(result, needle)
    # lightsweep's own refusals exit 2 in one line; an unknown option is Hydra's (exit 1).
    assert result.returncode == (1 if needle == "model/resnet" else 2)
    if needle != "model/resnet":
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Epoch" not in result.stdout
    assert store_state(tmp_path) == []  # refused before a run was created


def test_a_bad_value_fails_its_sweep_job_and_the_sweep_goes_on(tmp_path):
    """Validation runs inside each job (not while Hydra composes, which would abort the launcher): the
    bad job is a FAILED child with the reason, the jobs around it run, the sweep exits 1."""
    result = run_sweep(tmp_path, "scheduler=step", "scheduler.step_size=2,0,3", *SWEEP_FAST)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "3 jobs, 1 failed" in result.stdout
    _, parents, children, _ = sweep_runs(tmp_path)
    status = {c.data.tags["lightsweep.job"]: c.info.status for c in children}
    assert status == {"0": "FINISHED", "1": "FAILED", "2": "FINISHED"}  # step_size 2, 0, 3
    failed = next(c for c in children if c.info.status == "FAILED")
    assert "scheduler.step_size must be > 0" in failed.data.tags["lightsweep.failure_reason"]
    assert parents[0].info.status == "FINISHED"  # not every job failed


def test_a_value_scikit_learn_rejects_fails_the_run_in_one_line(tmp_path):
    result = run_cli(tmp_path, "data=moons", "data.loader.noise=-1", *FAST)
    assert_short_error(result, "make_moons rejected its arguments", "'noise' parameter", "data.loader.*")
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith("error: make_moons")
    assert store_state(tmp_path) == ["FAILED"]


def test_an_unknown_constructor_argument_fails_the_run_in_one_line(tmp_path):
    result = run_cli(tmp_path, "+model.bogus=1", *FAST)
    assert_short_error(result, "cannot build model", "bogus")
    assert store_state(tmp_path) == ["FAILED"]


def test_missing_dataset_offline_names_the_fixes(tmp_path):
    result = run_cli(tmp_path, f"data.root={tmp_path}/nodata", "data.local_copies=[]", *FAST)
    assert_short_error(result, "FashionMNIST not found", "make setup", "data.download=true")
    assert store_state(tmp_path) == ["FAILED"]


@needs_fashion_mnist
def test_truncated_gzip_leaves_nothing_a_later_run_trips_over(tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(DEBIAN_COPY, copy)
    gz = copy / "train-images-idx3-ubyte.gz"
    good = gz.read_bytes()
    gz.write_bytes(good[: len(good) // 2])
    data = [f"data.root={tmp_path}/data", f"data.local_copies=[{copy}]"]
    result = run_cli(tmp_path, *data, *FAST)
    assert_short_error(result, "train-images-idx3-ubyte.gz", "truncated or corrupt")
    assert store_state(tmp_path) == ["FAILED"]
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    assert not (raw / "train-images-idx3-ubyte").exists()
    assert not [p.name for p in raw.iterdir() if p.name.startswith(".")]  # no temp file left behind

    gz.write_bytes(good)  # the user repairs the copy; the next run just works
    again = run_cli(tmp_path, *data, *FAST)
    assert again.returncode == 0, again.stderr[-2000:]
    assert sorted(store_state(tmp_path)) == ["FAILED", "FINISHED"]


@needs_fashion_mnist
def test_corrupted_idx_file_fails_the_checksum(tmp_path):
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    prepared = run_cli(tmp_path, f"data.root={tmp_path}/data", *FAST)  # decompresses the real files
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    images = raw / "t10k-images-idx3-ubyte"
    content = bytearray(images.read_bytes())
    content[5000:5100] = bytes(100)  # same size, other pixels
    images.write_bytes(bytes(content))
    result = run_cli(tmp_path, f"data.root={tmp_path}/data", *FAST)
    assert_short_error(result, "t10k-images-idx3-ubyte is corrupt", f"delete {raw}")
    assert sorted(store_state(tmp_path)) == ["FAILED", "FINISHED"]


def test_unwritable_mlruns_is_refused_before_training(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the mlruns folder should go")
    env = cli_env(tmp_path)
    env.pop("MLFLOW_TRACKING_URI")  # the default store under paths.mlruns_dir
    result = run_cli(tmp_path, f"paths.mlruns_dir={blocker}/mlruns", *FAST, env=env)
    assert_short_error(result, "cannot write the MLflow store", f"make {blocker}/mlruns writable")
    assert "Epoch" not in result.stdout
    assert blocker.read_text().startswith("a file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write a read-only folder")
def test_read_only_mlruns_is_refused(tmp_path):
    mlruns = tmp_path / "mlruns"
    mlruns.mkdir(mode=0o500)
    env = cli_env(tmp_path)
    env.pop("MLFLOW_TRACKING_URI")
    result = run_cli(tmp_path, f"paths.mlruns_dir={mlruns}", *FAST, env=env)
    assert_short_error(result, "cannot write the MLflow store")


@pytest.mark.parametrize(
    "uri, needle",
    [
        ("http://127.0.0.1:{port}", "no MLflow server answers at http://127.0.0.1:"),
        ("not a uri", "is not a URI"),
        ("htp://127.0.0.1/x", "cannot open the MLflow store htp://127.0.0.1/x"),
    ],
    ids=["server-down", "not-a-uri", "unknown-scheme"],
)
def test_bad_tracking_uri_is_refused_before_training(tmp_path, uri, needle):
    env = cli_env(tmp_path, MLFLOW_TRACKING_URI=uri.format(port=free_port()))
    result = run_cli(tmp_path, *FAST, env=env, timeout=120)
    assert_short_error(result, needle, "MLFLOW_TRACKING_URI")
    assert "Epoch" not in result.stdout
    assert not list((tmp_path / "outputs").glob("runs/*/checkpoints"))  # nothing trained


def test_checkpoint_of_another_model_is_refused(tmp_path):
    softmax = run_cli(tmp_path, *FAST)
    assert softmax.returncode == 0, softmax.stderr[-2000:]
    (checkpoint,) = (tmp_path / "outputs").glob("runs/*/checkpoints/last.ckpt")
    result = run_cli(tmp_path, "model=mlp", f"ckpt_path={checkpoint}", *FAST)
    assert_short_error(result, f"checkpoint {checkpoint} belongs to another model", "model=")
    assert sorted(store_state(tmp_path)) == ["FAILED", "FINISHED"]


@pytest.mark.parametrize("override", ["model=resnet", "optimizer.lr=-1"])
def test_full_traceback_on_request(tmp_path, override):
    result = run_cli(tmp_path, override, *FAST, env=cli_env(tmp_path, HYDRA_FULL_ERROR="1"))
    assert result.returncode != 0 and "Traceback" in result.stderr
