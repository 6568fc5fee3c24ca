"""Bad input: one clear line naming the fix, exit code != 0, no run left RUNNING, nothing half-written.

In-process: the real config composed with the overrides, run by `lightsweep.cli.task` as
`python train.py` runs it (exit code, stderr), against a real sqlite store in tmp_path. The CLI's own
part of the contract (a refusal is one line and exit 2, Hydra's errors exit 1, HYDRA_FULL_ERROR=1 keeps
the traceback) runs the real CLI in subprocesses.
"""

from __future__ import annotations

import os
import shutil

import pytest
from helpers import (
    DEBIAN_COPY,
    FAST,
    QUIET,
    TINY,
    all_runs,
    assert_short_error,
    cli_env,
    cli_error,
    compose_config,
    free_port,
    needs_fashion_mnist,
    run_cli,
    tracking_uri,
)
from mlflow.tracking import MlflowClient

from lightsweep.cli import task


def store_state(tmp_path) -> list[str]:
    """Statuses of every run in the store ([] when the store was never created)."""
    if not (tmp_path / "mlruns" / "mlflow.db").exists():
        return []
    return sorted(r.info.status for r in all_runs(MlflowClient(tracking_uri(tmp_path))))


@pytest.mark.parametrize(
    "overrides, needle",
    [
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
def test_bad_config_is_refused_before_any_run(make_cfg, capsys, tmp_path, overrides, needle):
    cfg = make_cfg(*overrides)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        task(cfg)
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err  # one line
    assert "Epoch" not in out
    assert store_state(tmp_path) == []  # refused before a run was created


@pytest.mark.parametrize(
    "override, code, needle",
    [("optimizer.lr=-1", 2, "optimizer.lr must be > 0"), ("model=resnet", 1, "model/resnet")],
    ids=["lightsweep-refusal", "hydra-unknown-option"],
)
def test_the_cli_refuses_in_one_line_and_keeps_the_traceback_on_request(tmp_path, override, code, needle):
    """lightsweep's own refusals exit 2 in one line; an unknown option is Hydra's (exit 1, short too);
    HYDRA_FULL_ERROR=1 shows the traceback of either."""
    result = run_cli(tmp_path, override, "debug=fast", *QUIET)
    assert_short_error(result, needle)
    assert result.returncode == code
    if code == 2:
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"error: {needle}")
    assert "Epoch" not in result.stdout
    assert not (tmp_path / "store").exists()  # refused before a run was created
    full = run_cli(tmp_path, override, "debug=fast", *QUIET, env=cli_env(tmp_path, HYDRA_FULL_ERROR="1"))
    assert full.returncode != 0 and "Traceback" in full.stderr and needle in full.stderr


def test_a_value_scikit_learn_rejects_fails_the_run_in_one_line(make_cfg, capsys, tmp_path):
    line = cli_error(make_cfg("data=moons", "data.loader.noise=-1"), capsys)
    assert line.startswith("error: make_moons rejected its arguments")
    assert "'noise' parameter" in line and "data.loader.*" in line
    assert store_state(tmp_path) == ["FAILED"]


def test_an_unknown_constructor_argument_fails_the_run_in_one_line(make_cfg, capsys, tmp_path):
    line = cli_error(make_cfg("+model.bogus=1"), capsys)
    assert "cannot build model" in line and "bogus" in line
    assert store_state(tmp_path) == ["FAILED"]


def test_missing_dataset_offline_names_the_fixes(make_cfg, capsys, tmp_path):
    line = cli_error(make_cfg(f"data.root={tmp_path}/nodata", "data.local_copies=[]"), capsys)
    assert "FashionMNIST not found" in line and "make setup" in line and "data.download=true" in line
    assert store_state(tmp_path) == ["FAILED"]


@needs_fashion_mnist
def test_truncated_gzip_leaves_nothing_a_later_run_trips_over(make_cfg, capsys, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(DEBIAN_COPY, copy)
    gz = copy / "train-images-idx3-ubyte.gz"
    good = gz.read_bytes()
    gz.write_bytes(good[: len(good) // 2])
    data = [f"data.root={tmp_path}/data", f"data.local_copies=[{copy}]", *TINY]
    line = cli_error(make_cfg(*data), capsys)
    assert "train-images-idx3-ubyte.gz" in line and "truncated or corrupt" in line
    assert store_state(tmp_path) == ["FAILED"]
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    assert not (raw / "train-images-idx3-ubyte").exists()
    assert not [p.name for p in raw.iterdir() if p.name.startswith(".")]  # no temp file left behind

    gz.write_bytes(good)  # the user repairs the copy; the next run just works
    assert task(make_cfg(*data))["test/acc"] > 0
    assert store_state(tmp_path) == ["FAILED", "FINISHED"]


@needs_fashion_mnist
def test_corrupted_idx_file_fails_the_checksum(make_cfg, capsys, tmp_path):
    raw = tmp_path / "data" / "FashionMNIST" / "raw"
    task(make_cfg(f"data.root={tmp_path}/data", *TINY))  # decompresses the real files
    images = raw / "t10k-images-idx3-ubyte"
    content = bytearray(images.read_bytes())
    content[5000:5100] = bytes(100)  # same size, other pixels
    images.write_bytes(bytes(content))
    line = cli_error(make_cfg(f"data.root={tmp_path}/data", *TINY), capsys)
    assert "t10k-images-idx3-ubyte is corrupt" in line and f"delete {raw}" in line
    assert store_state(tmp_path) == ["FAILED", "FINISHED"]


def default_store_in(tmp_path, mlruns_dir):
    """The config of a run whose store is the default one (MLFLOW_TRACKING_URI unset: make_cfg unsets it)
    under `paths.mlruns_dir`."""
    return compose_config([*FAST, f"paths.output_dir={tmp_path / 'out'}", f"paths.mlruns_dir={mlruns_dir}"])


def test_unwritable_mlruns_is_refused_before_training(make_cfg, capsys, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the mlruns folder should go")
    line = cli_error(default_store_in(tmp_path, f"{blocker}/mlruns"), capsys)
    assert "cannot write the MLflow store" in line and f"make {blocker}/mlruns writable" in line
    assert not (tmp_path / "out" / "checkpoints").exists()  # nothing trained
    assert blocker.read_text().startswith("a file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write a read-only folder")
def test_read_only_mlruns_is_refused(make_cfg, capsys, tmp_path):
    mlruns = tmp_path / "mlruns-ro"
    mlruns.mkdir(mode=0o500)
    assert "cannot write the MLflow store" in cli_error(default_store_in(tmp_path, mlruns), capsys)


@pytest.mark.parametrize(
    "uri, needle",
    [
        ("http://127.0.0.1:{port}", "no MLflow server answers at http://127.0.0.1:"),
        ("not a uri", "is not a URI"),
        ("htp://127.0.0.1/x", "cannot open the MLflow store htp://127.0.0.1/x"),
    ],
    ids=["server-down", "not-a-uri", "unknown-scheme"],
)
def test_bad_tracking_uri_is_refused_before_training(make_cfg, capsys, monkeypatch, tmp_path, uri, needle):
    cfg = make_cfg()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri.format(port=free_port()))  # read when the run starts
    line = cli_error(cfg, capsys)
    assert needle in line and "MLFLOW_TRACKING_URI" in line
    assert not (tmp_path / "out" / "checkpoints").exists()  # nothing trained


def test_checkpoint_of_another_model_is_refused(make_cfg, capsys, tmp_path):
    task(make_cfg(*TINY))
    checkpoint = tmp_path / "out" / "checkpoints" / "last.ckpt"
    line = cli_error(make_cfg("model=mlp", f"ckpt_path={checkpoint}", *TINY), capsys)
    assert f"checkpoint {checkpoint} belongs to another model" in line and "model=" in line
    assert store_state(tmp_path) == ["FAILED", "FINISHED"]
