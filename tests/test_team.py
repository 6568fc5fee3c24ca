"""Team features, fast checks: multi-device and cluster configs, the server logger, the server
script's refusals, and one-line errors for a server that is down. The real server, browser and
DDP runs are in test_server.py, test_ui.py and test_ddp.py (slow tier)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from hydra.utils import instantiate
from team_helpers import SERVER_SCRIPT, free_port

from lightsweep.errors import LightsweepError


def test_ddp_cpu_builds_lightnings_two_process_spawn_strategy(make_cfg):
    from pytorch_lightning.strategies import DDPStrategy

    cfg = make_cfg("trainer=ddp_cpu")
    trainer = instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
    strategy = trainer.strategy
    assert type(strategy) is DDPStrategy  # Lightning's own, no lightsweep subclass
    assert strategy.num_processes == 2 and cfg.trainer.strategy == "ddp_spawn"


def test_cpu_trainer_builds_and_gpu_trainers_say_what_to_change_without_a_gpu(make_cfg):
    import torch

    from lightsweep.build import instantiate as build_part

    trainer = build_part(make_cfg("trainer=cpu"), "trainer", logger=False)
    assert type(trainer.accelerator).__name__ == "CPUAccelerator" and trainer.num_devices == 1
    for name in ("gpu", "ddp"):
        cfg = make_cfg(f"trainer={name}")
        if torch.cuda.is_available():  # a GPU machine: bf16 on the device, DDP by spawning
            trainer = build_part(cfg, "trainer", logger=False)
            assert trainer.precision == "bf16-mixed" and trainer.accelerator.is_available()
            continue
        with pytest.raises(LightsweepError, match=r"trainer\.accelerator=gpu is rejected"):
            build_part(cfg, "trainer", logger=False)


def test_epoch_history_state_round_trips():
    import torch

    from lightsweep.callbacks import EpochHistory

    history = EpochHistory()
    history.history["val/acc"] = [(0, 0.5), (1, float("nan"))]
    history.test_confusion = torch.eye(3)
    restored = EpochHistory()
    restored.load_state_dict(history.state_dict())
    assert restored.history["val/acc"][0] == (0, 0.5) and torch.equal(restored.test_confusion, torch.eye(3))


def test_server_logger_defaults_to_the_local_server_and_env_wins(make_cfg, monkeypatch):
    cfg = make_cfg("logger=mlflow_server")
    assert cfg.logger.mlflow.tracking_uri == "http://127.0.0.1:5000"
    assert cfg.logger.mlflow._target_ == "lightsweep.tracking.logger.MLFlowLogger"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.team.example:5000")
    assert make_cfg("logger=mlflow_server").logger.mlflow.tracking_uri == "http://mlflow.team.example:5000"


def test_slurm_launcher_has_lightsweep_defaults(make_cfg, monkeypatch, recwarn):
    monkeypatch.setenv("LIGHTSWEEP_SLURM_PARTITION", "gpu-short")
    cfg = make_cfg("hydra/launcher=slurm")
    # It extends the plugin's schema (Hydra's "extending configs"), rather than replacing it by name.
    assert not [w for w in recwarn if "ConfigStore schema" in str(w.message)]
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.lightsweep_submitit.slurm_launcher.LightsweepSlurmLauncher"
    assert (launcher.timeout_min, launcher.cpus_per_task, launcher.mem_gb, launcher.tasks_per_node) == (60, 4, 16, 1)
    assert launcher.partition == "gpu-short" and launcher.account is None
    assert launcher.setup == ["export OMP_NUM_THREADS=4"]
    assert launcher.submitit_folder.endswith("/.submitit/%j")
    instantiate(launcher)  # the plugin accepts every field
    local = make_cfg("hydra/launcher=submitit_local").hydra.launcher
    assert local._target_.endswith("LocalLauncher")


@pytest.mark.parametrize(
    "uri, warned",
    [
        ("sqlite:////tmp/x/mlflow.db", "local store"),
        ("http://127.0.0.1:5000", "compute node"),
        ("http://mlflow.team.example:5000", None),
    ],
)
def test_cluster_sweep_warns_about_stores_nodes_cannot_reach(make_cfg, capsys, uri, warned):
    from lightsweep.sweeps.hydra_callbacks import _warn_if_nodes_cannot_reach

    _warn_if_nodes_cannot_reach(make_cfg("hydra/launcher=slurm"), uri)
    err = capsys.readouterr().err
    assert (warned in err) if warned else err == ""
    _warn_if_nodes_cannot_reach(make_cfg(), uri)  # local launchers: nothing to say
    assert capsys.readouterr().err == ""


def test_a_server_that_is_down_fails_in_seconds_naming_the_fix(monkeypatch):
    from lightsweep.tracking.store import open_store

    start = time.monotonic()
    with pytest.raises(
        LightsweepError,
        match=r"no MLflow server answers at http://127.0.0.1:\d+ \(connection refused\)"
        r": start it with `make server`",
    ):
        open_store(f"http://127.0.0.1:{free_port()}")
    assert time.monotonic() - start < 15  # MLflow's own client would retry for minutes


def script(tmp_path, command, **env) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "LIGHTSWEEP_"))}
    return subprocess.run(
        ["bash", str(SERVER_SCRIPT), command],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, "LIGHTSWEEP_SERVER_DIR": str(tmp_path / "state"), **env},
    )


def test_server_script_refuses_to_start_without_an_admin_password(tmp_path):
    result = script(tmp_path, "start")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "set MLFLOW_AUTH_ADMIN_PASSWORD" in result.stderr
    result = script(tmp_path, "start", MLFLOW_AUTH_ADMIN_PASSWORD="short")
    assert result.returncode == 2 and "at least 12 characters" in result.stderr
    assert not (tmp_path / "state").exists()  # nothing was created


def test_server_script_status_and_usage(tmp_path):
    status = script(tmp_path, "status")
    assert status.returncode == 3 and status.stdout.count("not running") == 2
    assert script(tmp_path, "stop").returncode == 0  # stopping nothing is fine
    usage = script(tmp_path, "bogus")
    assert usage.returncode == 2 and "usage:" in usage.stderr
