"""The fast paths compute what the plain paths compute.

Several optimizer steps per Lightning call (`Classifier.fused_steps`), metrics logged once per
epoch, batched MLflow writes, the lean data preparation: each must leave the samples, the optimizer
steps, the weights and every logged metric (name, step, value) exactly as they were. Timings live
in benchmarks/speed.py, not here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient

from helpers import ROOT, SWEEP_FAST, cli_env, compose_config, run_sweep, sweep_runs, tracking_uri
from lightsweep.callbacks import ProgressBar
from lightsweep.models.base import Classifier
from lightsweep.sweeps.workers import parallel_sweep_requested
from lightsweep.train import train

# Misaligned on purpose: 23 batches per epoch, a log every 5 steps, so calls end at log steps, at
# epoch ends and at both at once; mlp has dropout (RNG order) and a cosine schedule (per epoch).
MISALIGNED = [
    "model=mlp", "trainer.max_epochs=3", "trainer.limit_train_batches=23", "trainer.log_every_n_steps=5",
    "trainer.limit_val_batches=3", "trainer.limit_test_batches=2", "trainer.enable_progress_bar=false",
    "callbacks.progress_bar=null", "callbacks.model_summary=null",
]


@pytest.fixture(autouse=True)
def _clean_hydra(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield
    GlobalHydra.instance().clear()


def _run(tmp_path, overrides, fused: bool, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # MLflow sets it on first use
    monkeypatch.setattr(Classifier, "fused_steps", fused)
    cfg = compose_config(overrides, tmp_path)
    metrics = train(cfg)
    client = MlflowClient(tracking_uri(tmp_path))
    run = client.get_run(metrics["run_id"])
    history = {key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
               for key in run.data.metrics}
    checkpoint = torch.load(tmp_path / "out" / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    return history, checkpoint


@pytest.mark.parametrize("extra", [[], ["+trainer.max_steps=52"]], ids=["epochs", "max_steps"])
def test_fused_steps_log_and_learn_exactly_what_one_batch_per_call_does(tmp_path, monkeypatch, extra):
    plain_history, plain_ckpt = _run(tmp_path / "plain", [*MISALIGNED, *extra], False, monkeypatch)
    fused_history, fused_ckpt = _run(tmp_path / "fused", [*MISALIGNED, *extra], True, monkeypatch)

    assert fused_history == plain_history  # names, steps and values, to the last bit
    steps = 52 if extra else 3 * 23
    assert fused_history["train/loss"][-1][0] == steps // 5 * 5 - 1  # logged at 4, 9, ..., up to the end
    assert fused_ckpt["global_step"] == plain_ckpt["global_step"]
    assert fused_ckpt["state_dict"].keys() == plain_ckpt["state_dict"].keys()
    for key, value in plain_ckpt["state_dict"].items():
        assert torch.equal(fused_ckpt["state_dict"][key], value), key
    assert fused_ckpt["lr_schedulers"] == plain_ckpt["lr_schedulers"]
    # Lightning's own counters (what a resumed run starts from) agree too.
    plain_loop = plain_ckpt["loops"]["fit_loop"]
    fused_loop = fused_ckpt["loops"]["fit_loop"]
    assert fused_loop["epoch_loop.batch_progress"] == plain_loop["epoch_loop.batch_progress"]
    assert fused_loop["epoch_loop.state_dict"] == plain_loop["epoch_loop.state_dict"]  # _batches_that_stepped


def _fit(cfg, ckpt_path=None, callbacks=()):
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data, _convert_="all")
    scheduler = instantiate(cfg.scheduler) if cfg.get("scheduler") else None
    model = instantiate(cfg.model, optimizer=instantiate(cfg.optimizer), scheduler=scheduler, _convert_="all")
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=cfg.trainer.max_epochs, limit_train_batches=17,
        limit_val_batches=2, log_every_n_steps=4, logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=cfg.paths.output_dir, num_sanity_val_steps=0,
        callbacks=[pl.callbacks.ModelCheckpoint(dirpath=cfg.paths.output_dir, save_last=True), *callbacks],
    )
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return model, trainer


def test_resuming_a_fused_run_continues_it_exactly(tmp_path):
    # No dropout: Lightning does not restore the RNG, so only a deterministic model resumes bit for bit.
    mlp = ["model=mlp", "model.dropout=0", "scheduler.T_max=3"]
    straight, straight_trainer = _fit(compose_config([*mlp, "trainer.max_epochs=3"], tmp_path / "a"))
    _fit(compose_config([*mlp, "trainer.max_epochs=2"], tmp_path / "b"))
    resumed, resumed_trainer = _fit(compose_config([*mlp, "trainer.max_epochs=3"], tmp_path / "b"),
                                    ckpt_path=str(tmp_path / "b" / "out" / "last.ckpt"))
    assert resumed_trainer.global_step == straight_trainer.global_step == 3 * 17
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key
    assert resumed_trainer.lr_scheduler_configs[0].scheduler.state_dict() == \
        straight_trainer.lr_scheduler_configs[0].scheduler.state_dict()


class CountBackward(pl.Callback):
    def __init__(self):
        self.calls = 0

    def on_after_backward(self, trainer, pl_module):
        self.calls += 1


def test_callbacks_with_per_step_hooks_still_get_every_step(tmp_path):
    counter = CountBackward()
    model, trainer = _fit(compose_config(["trainer.max_epochs=2"], tmp_path), callbacks=[counter])
    assert model._fused and not model._direct_steps()  # the hooks are called, through Lightning
    assert counter.calls == trainer.global_step == 2 * 17


@pytest.mark.parametrize("setting", ["trainer.gradient_clip_val=0.5", "+trainer.val_check_interval=5"])
def test_what_needs_one_batch_per_call_gets_it(make_cfg, tmp_path, setting):
    cfg = make_cfg(setting, "logger=none")
    metrics = train(cfg)
    assert metrics["test/acc"] > 0.3
    model = instantiate(cfg.model, optimizer=instantiate(cfg.optimizer), _convert_="all")
    model.trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
    assert not model._fused and model.automatic_optimization
    assert model.training_step.__name__ == "_training_batch"


def test_device_resident_data_and_batches_stay_on_the_trainer_device(make_cfg):
    """`trainer=gpu` keeps the data on the GPU; the same code path, with a device that is not the CPU."""
    datamodule = instantiate(make_cfg("data=digits").data, _convert_="all")
    meta = torch.device("meta")  # no GPU here: a device without data, which still types every tensor
    datamodule.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=meta), global_rank=0, world_size=1)
    datamodule.setup("fit")
    assert {t.device for pair in datamodule.tensors.values() for t in pair} == {meta}
    batches = datamodule.train_dataloader()
    batches.set_epoch(1)
    for loader in (batches, datamodule.val_dataloader()):
        assert {t.device for batch in loader for t in batch} == {meta}


def test_bf16_mixed_trains_with_fused_direct_steps(make_cfg):
    """`trainer=gpu` trains in bf16-mixed; on the CPU autocast does the same, on the fast path."""
    cfg = make_cfg("data.device_resident=true", "trainer.precision=bf16-mixed", "logger=none")
    datamodule = instantiate(cfg.data, _convert_="all")
    model = instantiate(cfg.model, optimizer=instantiate(cfg.optimizer), _convert_="all")
    trainer = pl.Trainer(accelerator="cpu", devices=1, precision="bf16-mixed", max_epochs=1, limit_train_batches=6,
                         limit_val_batches=2, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(model, datamodule=datamodule)
    assert datamodule.tensors["train"][0].device == trainer.strategy.root_device
    assert model._fused and model._direct_steps()
    assert trainer.global_step == 6 and torch.isfinite(trainer.callback_metrics["train/loss_epoch"])


def test_buffered_mlflow_logger_sends_every_point_once(tmp_path):
    from lightsweep.tracking.logger import MLFlowLogger
    from lightsweep.tracking.store import open_store

    uri = tracking_uri(tmp_path)
    client = open_store(uri)
    run_id = client.create_run(client.create_experiment("x")).info.run_id
    logger = MLFlowLogger(tracking_uri=uri, run_id=run_id, flush_every_s=3600)
    for step in range(2500):
        logger.log_metrics({"a": float(step), "b": step / 2}, step=step)
    assert client.get_metric_history(run_id, "a") == []  # queued, not sent
    logger.finalize("success")  # sends all (in batches of at most 1000)
    history = client.get_metric_history(run_id, "a")
    assert [(m.step, m.value) for m in history] == [(s, float(s)) for s in range(2500)]
    assert len(client.get_metric_history(run_id, "b")) == 2500


def test_progress_bar_refreshes_when_a_call_passes_a_multiple_of_the_refresh_rate():
    bar = ProgressBar(refresh_rate=50)

    class FakeTqdm:
        disable, total, n = False, 430, 0

        def __init__(self):
            self.shown = []

        def set_postfix(self, metrics):
            self.shown.append(self.n)

    fake = FakeTqdm()
    bar._train_progress_bar = fake
    bar.get_metrics = lambda trainer, module: {}
    for n in (20, 70, 120, 130, 170, 220, 270, 320, 370, 420, 430):  # calls ending at log steps
        bar.on_train_batch_end(None, None, None, None, n - 1)
    assert fake.shown == [70, 120, 170, 220, 270, 320, 370, 420, 430]


class CudaCheckProbe(pl.Callback):
    seen: list = []  # PYTORCH_NVML_BASED_CUDA_CHECK at each training call

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        CudaCheckProbe.seen.append(os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK"))


def test_cpu_training_asks_torch_not_nvml_whether_there_is_a_gpu(make_cfg):
    """Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 when imported; with it, Adam's every step loads
    libnvidia-ml (~0.1 ms, a quarter of a softmax step on CPU). A CPU run lifts it while it trains
    and tests, and puts it back."""
    assert os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1"  # Lightning is imported
    CudaCheckProbe.seen.clear()
    metrics = train(make_cfg("logger=none", "optimizer=adam", "+callbacks.cuda_check._target_=test_speed.CudaCheckProbe"))
    assert metrics["test/acc"] > 0.3
    assert CudaCheckProbe.seen and set(CudaCheckProbe.seen) == {None}
    assert os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1"


WORKER_PROBE = """
import sys
from joblib import Parallel, delayed
from omegaconf import OmegaConf
from lightsweep.sweeps.workers import start_parallel_workers

def job_start():
    import multiprocessing, sys
    return [m for m in ("torch", "pytorch_lightning", "mlflow", "matplotlib.pyplot") if m in sys.modules], \\
        multiprocessing.current_process().name

launcher = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 2}
start_parallel_workers(OmegaConf.create({"hydra": {"launcher": launcher}}))
print("parent:", [m for m in ("torch", "pytorch_lightning") if m in sys.modules])
for imported, name in Parallel(n_jobs=2, backend="loky")(delayed(job_start)() for _ in range(2)):
    print("job:", name, imported)
"""


def test_parallel_sweep_workers_start_with_a_jobs_modules_imported_once():
    """Under hydra/launcher=joblib, workers fork from a server that imported torch, Lightning, MLflow
    and pyplot; the sweep's own process imports none of the training side."""
    result = subprocess.run([sys.executable, "-c", WORKER_PROBE], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert "parent: []" in lines
    jobs = [line for line in lines if line.startswith("job:")]
    assert len(jobs) == 2
    for line in jobs:
        assert line.startswith("job: ForkServerProcess"), line
        assert line.endswith("['torch', 'pytorch_lightning', 'mlflow', 'matplotlib.pyplot']"), line


@pytest.mark.parametrize("argv, expected", [
    (["-m", "optimizer=sgd,adam", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], True),
    (["--multirun", "hydra.launcher.n_jobs=3", "optimizer=sgd,adam", "hydra/launcher=joblib"], True),
    (["optimizer=adam", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], False),  # not a multirun
    (["-m", "optimizer=sgd,adam", "hydra/launcher=joblib", "hydra.launcher.n_jobs=1"], False),  # jobs in-process
    (["-m", "optimizer=sgd,adam", "hydra.launcher.n_jobs=2"], False),  # Hydra's basic launcher
    (["-m", "optimizer=sgd,adam", "hydra/launcher=submitit_local"], False),
    (["-m", "optimizer=sgd,adam", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "--cfg", "job"], False),
    (["-m", "optimizer=[sgd", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], False),  # Hydra reports it
], ids=["joblib", "long-flag", "single-run", "n_jobs=1", "basic", "submitit", "print-config", "bad-override"])
def test_worker_server_starts_early_only_for_a_parallel_joblib_sweep(argv, expected):
    """The CLI starts the workers' fork server from the command line, before Hydra composes, when
    it asks for a joblib sweep with several jobs at a time; the composed config still decides."""
    assert parallel_sweep_requested(argv) is expected


def test_a_parallel_sweep_that_cannot_start_leaves_no_worker_server(tmp_path):
    """The fork server starts before Hydra reads the config, so a bad override is found while it
    still imports: the CLI ends it on exit instead of leaving it to finish its imports."""
    argv = ["-m", "optimizer=sgd,no_such_optimizer", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]
    assert parallel_sweep_requested(argv)
    marker = f"lightsweep-test-{os.getpid()}-{tmp_path.name}"
    with open(tmp_path / "out.txt", "w") as out:  # not a pipe: the server would hold it open
        code = subprocess.run([sys.executable, "train.py", *argv, f"paths.log_dir={tmp_path}/outputs"],
                              cwd=ROOT, env=cli_env(tmp_path, LIGHTSWEEP_TEST_MARKER=marker),
                              stdout=out, stderr=subprocess.STDOUT, timeout=300).returncode
    assert code != 0
    assert "no_such_optimizer" in (tmp_path / "out.txt").read_text()
    assert _fork_servers_with_env(f"LIGHTSWEEP_TEST_MARKER={marker}") == []


def _fork_servers_with_env(entry: str) -> list[str]:
    """Live multiprocessing fork servers whose environment holds `entry` (their command lines)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if not proc.name.isdigit() or entry.encode() not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if "multiprocessing.forkserver" in cmdline and (proc / "stat").read_text().split(")")[-1].split()[0] != "Z":
                found.append(cmdline[:200])
        except OSError:  # gone meanwhile
            continue
    return found


def test_parallel_sweep_jobs_log_lightning_to_their_log_file(tmp_path):
    """Imported by the fork server before any logging is set up, Lightning would keep its lines out
    of the job's log file; each job of a joblib sweep logs them as a sequential job does."""
    result = run_sweep(tmp_path, "optimizer=sgd,adam", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                       *SWEEP_FAST, "hydra.sweep.dir=" + str(tmp_path / "sweep"))
    assert result.returncode == 0, result.stderr[-3000:]
    _, parents, children, _ = sweep_runs(tmp_path)
    assert len(parents) == 1 and sorted(c.info.status for c in children) == ["FINISHED", "FINISHED"]
    logs = sorted((tmp_path / "sweep").glob("*/cli.log"))
    assert len(logs) == 2
    for log in logs:
        assert "[pytorch_lightning" in log.read_text(), log


def test_cli_pauses_the_collector_for_imports_and_a_run_resumes_it(make_cfg):
    """`python train.py` imports with the cyclic collector off (~4 s instead of ~6 s here); the run
    freezes what exists by then and turns it back on before it builds data, model and trainer."""
    import gc

    from lightsweep import startup

    assert gc.isenabled()
    startup.resume_gc()  # not paused: nothing to do
    assert gc.isenabled() and gc.get_freeze_count() == 0
    startup.pause_gc()
    try:
        assert not gc.isenabled()
        train(make_cfg("logger=none"))
        assert gc.isenabled() and gc.get_freeze_count() > 0
    finally:
        startup.resume_gc()
        gc.unfreeze()
