"""The SLURM launchers' planning, without a cluster (fast): which tasks a sweep becomes under
hydra/launcher=slurm_vectorized, what each task asks SLURM for from its jobs' trainer, and the one-line
refusals of wait=false and of `pipelines/collect.py`. Submission, requeueing and collection on a real
(one-node) cluster are in tests/test_slurm.py (slow tier)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import PYTHON, ROOT, assert_short_error, cli_env, compose_config
from hydra.utils import instantiate
from omegaconf import OmegaConf

from hydra_plugins.lightsweep_submitit.slurm_launcher import task_resources
from hydra_plugins.lightsweep_submitit.slurm_vectorized_launcher import SlurmVectorizedLauncher
from lightsweep.cli import task

SLURM_VECTORIZED = ["hydra/launcher=slurm_vectorized", "hydra.launcher.mem_gb=1", "data=digits", "model=softmax"]


def test_slurm_vectorized_extends_the_slurm_launchers_defaults(make_cfg):
    cfg = make_cfg("hydra/launcher=slurm_vectorized")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("slurm_vectorized_launcher.SlurmVectorizedLauncher")
    slurm = make_cfg("hydra/launcher=slurm").hydra.launcher

    def fields(node):
        values = OmegaConf.to_container(node, resolve=False)
        return {k: v for k, v in values.items() if k not in ("_target_", "max_members")}

    assert fields(launcher) == fields(slurm)  # every SLURM default applies
    assert launcher.max_members == 64 and launcher.wait is True and slurm.wait is True
    built = instantiate(launcher)
    # (by name: Hydra's plugin scan loads the module under its own name too)
    assert type(built).__name__ == SlurmVectorizedLauncher.__name__ and built.planner.max_members == 64


def planned(tmp_path, *swept: list[str]):
    """SlurmVectorizedLauncher.plan_tasks over jobs composed from the real configs (each job's overrides
    a list), as Hydra's config loader composes a sweep's jobs."""
    base = [*SLURM_VECTORIZED, f"hydra.sweep.dir={tmp_path}/sweep"]
    master = compose_config(base, tmp_path)
    launcher = instantiate(master.hydra.launcher)

    def load_sweep_config(_master, overrides):
        cfg = compose_config([*base, *overrides], tmp_path)
        OmegaConf.set_readonly(cfg.hydra, False)  # (as Hydra's loader gives it; compose() locks it)
        return cfg

    loader = SimpleNamespace(load_sweep_config=load_sweep_config)
    launcher.setup(hydra_context=SimpleNamespace(config_loader=loader), task_function=task, config=master)
    return launcher, launcher.plan_tasks([list(o) for o in swept], initial_job_idx=0)


def test_a_group_is_one_task_and_a_job_that_cannot_join_is_a_task_of_its_own(tmp_path, caplog):
    jobs = [
        ["optimizer=sgd"],
        ["optimizer=sgd", "+trainer.accumulate_grad_batches=2"],  # not vectorized: alone
        ["optimizer=adam"],
        ["optimizer=nadam"],
    ]
    with caplog.at_level("INFO"):
        launcher, tasks = planned(tmp_path, *jobs)
    assert [[num for num, _ in t.jobs] for t in tasks] == [[0, 2, 3], [1]]
    group, alone = tasks
    # What travels to the node: the jobs' numbers and overrides (composed there), and Hydra's state.
    assert group.args[0] == [(0, jobs[0]), (2, jobs[2]), (3, jobs[3])] and len(group.args) == 2
    assert alone.args[0] == [(1, jobs[1])]
    assert [c.optimizer._target_.rsplit(".", 1)[-1] for c in group.configs] == ["SGD", "Adam", "NAdam"]
    assert "Job #1 runs alone: trainer.accumulate_grad_batches is not vectorized" in caplog.text
    # The memory estimate: a softmax 64 -> 10, three members, digits held once.
    line = next(r.getMessage() for r in caplog.records if "one SLURM task" in r.getMessage())
    assert line.startswith("Group of 3 jobs (#0-3), one SLURM task: ") and " of tensors (weights and gradients " in line
    # 650 float32 weights x 3 members x 2 (gradients); Adam's and NAdam's two moments of 650 each (SGD
    # without momentum keeps none); a batch of 64 through 10 outputs per member, and its gradient;
    # digits' 1797 images of 64 floats and their labels.
    assert "weights and gradients 15.2 KiB, optimizer state 10.2 KiB, activations 15.0 KiB" in line, line
    assert "data 463.3 KiB" in line, line
    assert task_resources(launcher.params, group.configs) == {}  # a CPU trainer: nothing beyond the settings


def test_a_group_over_its_tasks_memory_is_warned_about(tmp_path, capsys):
    launcher, _ = planned(tmp_path)
    launcher.params["mem_gb"] = 1e-4  # (digits' group needs about 1 MiB)
    launcher.plan_tasks([["optimizer=sgd"], ["optimizer=adam"]], initial_job_idx=0)
    err = capsys.readouterr().err
    assert "warning: group #0-1 needs about" in err and "raise mem_gb, or lower hydra.launcher.max_members" in err


def trainer(*overrides: str):
    return [compose_config(list(overrides))]


@pytest.mark.parametrize(
    "overrides, params, needs",
    [
        ([], {}, {}),
        (["trainer=gpu"], {}, {"gpus_per_node": 1}),  # one GPU per task: a group trains on one device
        (["trainer=gpu"], {"gpus_per_node": 2}, {}),  # the launcher's own setting stands
        # DDP: SLURM starts one task per device on each node (Lightning's SLURM environment reads them)
        (["trainer=ddp_cpu", "trainer.strategy=ddp"], {}, {"tasks_per_node": 2}),
        (["trainer=ddp_cpu", "trainer.strategy=ddp"], {"tasks_per_node": 2}, {}),
        (
            ["trainer=ddp", "trainer.strategy=ddp", "trainer.devices=4", "trainer.num_nodes=2"],
            {},
            {"nodes": 2, "tasks_per_node": 4, "gpus_per_node": 4},
        ),
        (["trainer=ddp", "trainer.strategy=ddp"], {"gpus_per_node": 8}, {"tasks_per_node": 8}),
    ],
)
def test_each_task_asks_slurm_for_what_its_trainer_runs_on(overrides, params, needs):
    defaults = {"nodes": 1, "tasks_per_node": 1, "gpus_per_node": None}
    assert task_resources({**defaults, **params}, trainer(*overrides)) == needs


@pytest.mark.parametrize(
    "overrides, params, error",
    [
        (["trainer=ddp_cpu"], {}, "trainer.strategy=ddp_spawn under SLURM: every worker it starts reads rank 0"),
        (["trainer=ddp", "trainer.strategy=ddp"], {}, "trainer.devices=-1: SLURM starts one task per device"),
        (
            ["trainer=ddp_cpu", "trainer.strategy=ddp"],
            {"tasks_per_node": 3},
            "hydra.launcher.tasks_per_node=3, but the trainer runs 2",
        ),
        (["+trainer.num_nodes=2"], {}, "trainer.num_nodes=2 trains across nodes with DDP only"),
    ],
)
def test_what_slurm_cannot_run_is_refused_in_one_line(overrides, params, error, capsys):
    with pytest.raises(SystemExit) as exit_info:
        task_resources({"nodes": 1, "tasks_per_node": 1, "gpus_per_node": None, **params}, trainer(*overrides))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {error}") and len(err.splitlines()) == 1, err


@pytest.fixture
def sbatch_on_path(tmp_path, monkeypatch):
    """A stand-in `sbatch` on PATH: the checks before submission run, nothing is submitted."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "sbatch").write_text("#!/bin/sh\nexit 1\n")
    (folder / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.parametrize(
    "overrides, error",
    [
        (
            ["hydra/sweeper=optuna"],
            "hydra.launcher.wait=false submits the jobs and returns, but the sweeper (OptunaSweeper) needs",
        ),
        (["logger=none"], "hydra.launcher.wait=false records the tasks on the sweep's MLflow parent run"),
    ],
)
def test_wait_false_is_refused_where_nobody_could_collect(tmp_path, sbatch_on_path, capsys, overrides, error):
    cfg = compose_config(
        ["hydra/launcher=slurm", "hydra.launcher.wait=false", f"hydra.sweep.dir={tmp_path}/sweep", *overrides], tmp_path
    )
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=task, config=cfg)
    with pytest.raises(SystemExit) as exit_info:
        launcher.check_can_submit(Path(tmp_path / "sweep"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {error}") and len(err.splitlines()) == 1, err


def collect(tmp_path, *overrides: str):
    import subprocess

    return subprocess.run(
        [PYTHON, "pipelines/collect.py", f"paths.log_dir={tmp_path}/outputs", *overrides],
        cwd=ROOT,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_collect_refuses_what_it_cannot_collect_in_one_line(tmp_path):
    from mlflow.tracking import MlflowClient

    nothing = collect(tmp_path)
    assert nothing.returncode == 2
    assert_short_error(nothing, "no sweep waits to be collected in this store")
    client = MlflowClient(cli_env(tmp_path)["MLFLOW_TRACKING_URI"])
    experiment = client.create_experiment("lightsweep")
    tags = {"lightsweep.role": "sweep", "lightsweep.sweep_dir": str(tmp_path / "sweep")}
    waited = client.create_run(experiment, tags=tags).info.run_id  # a sweep that waited for its jobs
    result = collect(tmp_path, f"sweep={waited}")
    assert result.returncode == 2
    assert_short_error(result, f"sweep {waited} has no SLURM tasks to collect", "pipelines/compare.py")
    unknown = collect(tmp_path, "sweep=0123456789abcdef")
    assert unknown.returncode == 2 and "no such run in this store" in unknown.stderr
