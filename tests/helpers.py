"""Test helpers: compose the real configs with fast overrides, write IDX files, find runs."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

import lightsweep.resolvers  # noqa: F401  (registers the resolvers used by conf/)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
PYTHON = sys.executable
DEBIAN_COPY = Path("/usr/share/datasets/fashion-mnist")
needs_fashion_mnist = pytest.mark.skipif(
    not (DEBIAN_COPY / "train-images-idx3-ubyte.gz").exists(), reason="run `make setup` (dataset-fashion-mnist)"
)

# A few batches of everything: seconds per run, every code path exercised.
FAST = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=8",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.log_every_n_steps=2",
    "trainer.enable_progress_bar=false",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
]


def compose_config(overrides: list[str], tmp_path: Path | None = None):
    """The config `python train.py <overrides>` would get, with outputs and store in tmp_path."""
    extra = []
    if tmp_path is not None:
        extra = [f"paths.output_dir={tmp_path / 'out'}", f"paths.mlruns_dir={tmp_path / 'mlruns'}"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*overrides, *extra], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def tracking_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


_EMPTY_STORE: list[Path] = []


def seed_store(db: Path) -> None:
    """Put an empty MLflow store at `db` (unless one is there): a copy of one this process created once.
    Creating a store (MLflow's schema and its migrations) takes seconds, in every test that tracks; the
    tests that train in this process (`make_cfg`, `run_in_process`) start from an existing store instead,
    as most runs do. A store created from nothing: the CLI's processes (`run_cli`, `run_sweep`), and the
    runs the tests point at another store (tests/reliability/test_bad_input.py)."""
    import atexit
    import shutil
    import sqlite3
    import tempfile

    if db.exists():
        return
    if not _EMPTY_STORE:
        from lightsweep.tracking.store import open_store

        folder = Path(tempfile.mkdtemp(prefix="lightsweep-tests-store-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        open_store(f"sqlite:///{folder / 'created.db'}")
        # One consistent file (the store is in WAL mode: part of it may still be in the -wal file).
        with sqlite3.connect(folder / "created.db") as created, sqlite3.connect(folder / "mlflow.db") as empty:
            created.backup(empty)
        _EMPTY_STORE.append(folder / "mlflow.db")
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_EMPTY_STORE[0], db)


def write_idx(path: Path, array: torch.Tensor, compress: bool = False) -> None:
    """Write an IDX file (the MNIST format): magic, dims, big-endian uint8 payload."""
    dims = tuple(array.shape)
    header = struct.pack(">I", 0x0800 + len(dims)) + b"".join(struct.pack(">I", d) for d in dims)
    payload = header + array.to(torch.uint8).numpy().tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)


def write_mnist_like(folder: Path, n_train=60, n_test=20, compress=False, seed=0) -> None:
    """Tiny MNIST-format files: class k images are filled with value 20*k plus noise."""
    generator = torch.Generator().manual_seed(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = torch.arange(n) % 10
        images = (labels[:, None, None] * 20 + torch.randint(0, 20, (n, 28, 28), generator=generator)).clamp(0, 255)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, compress)


def artifact_paths(client, run_id: str, path: str | None = None) -> set[str]:
    """Every artifact file of a run, as relative paths."""
    out: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return out


# Sweep jobs of a few batches (with QUIET, which run_sweep adds).
SWEEP_FAST = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=10",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.log_every_n_steps=5",
]
QUIET = ["trainer.enable_progress_bar=false", "callbacks.progress_bar=null", "callbacks.model_summary=null"]

# The least training that still fits, tests and checkpoints: for tests of what happens around training.
TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.log_every_n_steps=1",
]


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a CLI run: the store in tmp_path/store, short errors (no HYDRA_FULL_ERROR), one
    torch thread (tiny models: see conftest)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/store/mlflow.db", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    return {**env, **extra}


def run_cli(
    tmp_path: Path, *overrides: str, timeout: int = 300, env: dict | None = None, script: tuple = ("train.py",)
):
    """`python train.py <overrides>` as a user runs it, outputs under tmp_path/outputs."""
    return subprocess.run(
        [PYTHON, *script, f"paths.log_dir={tmp_path}/outputs", *overrides],
        cwd=ROOT,
        env=env or cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_sweep(tmp_path: Path, *overrides: str, timeout: int = 600, env: dict | None = None):
    """`python train.py -m <overrides>` (quiet), store and outputs in tmp_path."""
    return run_cli(tmp_path, *QUIET, *overrides, timeout=timeout, env=env, script=("train.py", "-m"))


def command_run(script: str):
    """What `python <script>` calls: the command's `run()` (lightsweep.entry)."""
    if script == "train.py":
        from lightsweep.cli import run
    elif script == "evaluate.py":
        from lightsweep.evaluate import run
    else:  # pipelines/ is not a package: the script as a module
        import importlib.util

        spec = importlib.util.spec_from_file_location(f"lightsweep_script_{Path(script).stem}", ROOT / script)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        run = module.main.run
    return run


def run_in_process(
    tmp_path: Path, *overrides: str, env: dict | None = None, script: tuple = ("train.py",)
) -> subprocess.CompletedProcess:
    """`run_cli` in this process: the command's `run()` with the argv and environment `run_cli` gives
    its process (the same code from parsing the command line on, without a new interpreter's imports),
    for tests of what a command does rather than of its process (signals, start-up, the shell).
    Returns the exit code and what the command printed (not its worker processes: they print to the
    test's own output)."""
    import contextlib
    import io

    from lightsweep import startup

    argv = [script[0], *script[1:], f"paths.log_dir={tmp_path}/outputs", *overrides]
    saved = (sys.argv, dict(os.environ), startup.pause_gc)
    out, err = io.StringIO(), io.StringIO()
    code = 0
    try:
        sys.argv = argv
        os.environ.clear()
        os.environ.update(env or cli_env(tmp_path))
        if os.environ["MLFLOW_TRACKING_URI"] == cli_env(tmp_path)["MLFLOW_TRACKING_URI"]:
            seed_store(tmp_path / "store" / "mlflow.db")
        startup.pause_gc = lambda: None  # (the collector stays on in the test process)
        GlobalHydra.instance().clear()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            command_run(script[0])()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    finally:
        sys.argv, environ, startup.pause_gc = saved
        os.environ.clear()
        os.environ.update(environ)
        GlobalHydra.instance().clear()
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def sweep_in_process(tmp_path: Path, *overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`run_sweep` in this process (see `run_in_process`)."""
    return run_in_process(tmp_path, *QUIET, *overrides, env=env, script=("train.py", "-m"))


def sweep_runs(tmp_path: Path, experiment_name: str = "lightsweep"):
    """(client, parents, children, all runs) of one experiment of the tmp_path store."""
    client = store(tmp_path)
    experiment = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("lightsweep.role") == "sweep"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children, runs


def store(tmp_path: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{tmp_path}/store/mlflow.db")


def all_runs(client) -> list:
    """Every run of every experiment in the store (Default included)."""
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, max_results=10000) if ids else []


def cli_error(cfg, capsys, code: int = 2) -> str:
    """`lightsweep.cli.task(cfg)` (one run, as `python train.py` runs it) exits `code` with one
    `error: ...` line as the last line of stderr, and no traceback: that line."""
    from lightsweep.cli import task

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        task(cfg)
    assert exit_info.value.code == code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: "), err
    return last


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


def everything_logged(client, tmp_path: Path) -> str:
    """Every param, tag and text artifact of every run in the store, as one string."""
    texts = []
    for run in all_runs(client):
        texts += [f"{k}={v}" for k, v in {**run.data.params, **run.data.tags}.items()]
        for path in artifact_paths(client, run.info.run_id):
            if path.endswith((".yaml", ".md", ".csv", ".html", ".json")):
                local = client.download_artifacts(run.info.run_id, path, str(tmp_path / "downloads"))
                texts.append(open(local).read())
    return "\n".join(texts)


def assert_short_error(result, *needles: str) -> None:
    """Failed, with a short stderr (no traceback) that names the problem."""
    assert result.returncode != 0, result.stdout[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) <= 15, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """A real `mlflow server` on loopback over a sqlite store, started and stopped by PID."""

    def __init__(self, store_uri: str, artifacts: Path, port: int | None = None):
        self.store_uri, self.artifacts = store_uri, artifacts
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 180) -> MlflowServer:
        import time

        import requests

        log = open(self.artifacts.parent / f"mlflow-server-{self.port}.log", "a")
        self.process = subprocess.Popen(
            [
                str(Path(PYTHON).with_name("mlflow")),
                "server",
                "--backend-store-uri",
                self.store_uri,
                "--artifacts-destination",
                str(self.artifacts),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"mlflow server exited, see {log.name}"
            try:
                if requests.get(f"{self.url}/health", timeout=2).ok:
                    return self
            except requests.RequestException:
                time.sleep(0.5)
        raise TimeoutError(f"mlflow server not up within {timeout} s, see {log.name}")

    def stop(self) -> None:
        import signal

        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)  # the server and its uvicorn workers
            self.process.wait(timeout=30)
        self.process = None


def kill_9_at(tmp_path: Path, moment: str, *overrides: str, timeout: float = 240) -> None:
    """Run `train.py <overrides>` until it reaches `moment` (tests/reliability/pause.py), then `kill -9` it.
    Flags among the overrides (`-m`) go first, as on a command line."""
    import time

    flag = tmp_path / "paused"
    flags = [o for o in overrides if o.startswith("-")]
    overrides = tuple(o for o in overrides if not o.startswith("-"))
    process = subprocess.Popen(
        [
            PYTHON,
            "tests/reliability/pause.py",
            moment,
            str(flag),
            *flags,
            f"paths.log_dir={tmp_path}/outputs",
            *overrides,
        ],
        cwd=ROOT,
        env=cli_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + timeout
    while not flag.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "never reached the moment"
        time.sleep(0.02)
    process.kill()
    process.communicate(timeout=60)
