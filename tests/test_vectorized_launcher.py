"""The vectorized launcher's generic part (`hydra/launcher=vectorized`): Hydra's own launcher test
suites, discovery, composing lightsweep's config with it, and the planning of units."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from hydra.utils import instantiate
from omegaconf import OmegaConf

from hydra_plugins.lightsweep_vectorized import vectorized_launcher

# Hydra's plugin scan re-executes plugin modules, replacing their classes: look them up in the module
# (`vectorized_launcher.VectorizedLauncher`) when comparing, not through a name bound at import time.


pytestmark = pytest.mark.usefixtures("hydra_version_base_of_a_fresh_process")  # Hydra's suites (conftest)


def test_discovery() -> None:
    assert vectorized_launcher.VectorizedLauncher.__name__ in [
        x.__name__ for x in Plugins.instance().discover(Launcher)
    ]


@pytest.mark.parametrize("launcher_name, overrides", [("vectorized", [])])
class TestVectorizedLauncher(LauncherTestSuite):
    """Hydra's launcher suite: numbering, output dirs, `.hydra/` files and JobReturns."""


# 11 subprocesses of about 1 s each on 2 shared cores: slow tier. The in-process suite above and
# test_same_jobs_dirs_and_files_as_the_basic_launcher cover the same generic path in the fast tier.
@pytest.mark.slow
@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [
        (
            {},
            ["-m", "hydra/hydra_logging=hydra_debug", "hydra/job_logging=disabled", "hydra/launcher=vectorized"],
        )
    ],
)
class TestVectorizedLauncherIntegration(IntegrationTestSuite):
    """Hydra's integration suite: real `-m` apps in subprocesses (task names, run dirs, original cwd)."""


def sweep_outputs(hydra_sweep_runner, launcher: str, sweep_dir: Path) -> tuple[list, dict]:
    """A 3-job sweep (numbered from 0) with `launcher`: what each job returned, and the files it wrote
    (read inside the `with`: the sweep runner deletes its sweep dir on exit)."""
    sweep = hydra_sweep_runner(
        calling_file=None,
        calling_module="hydra.test_utils.a_module",
        task_function=lambda cfg: (cfg.a, cfg.b, HydraConfig.get().job.num),
        config_path="configs",
        config_name="compose",
        overrides=[f"hydra/launcher={launcher}", "hydra.job.chdir=False", "+a=0,1,2", "+b=x"],
        temp_dir=sweep_dir,
    )
    with sweep:
        returns = [
            (r.overrides, r.cfg, r.return_value, r.hydra_cfg.hydra.job.id, r.hydra_cfg.hydra.job.num, r.task_name)
            for r in sweep.returns[0]
        ]
        returns.append(
            [Path(r.hydra_cfg.hydra.runtime.output_dir).relative_to(sweep_dir).as_posix() for r in sweep.returns[0]]
        )
        files = {}
        for path in sorted(sweep_dir.rglob("*")):
            if path.is_file():
                text = path.read_text().replace(str(sweep_dir), "SWEEP_DIR")
                if path.name in ("hydra.yaml", "multirun.yaml"):
                    # the launcher's own section, and its choice, are the expected differences
                    cfg = OmegaConf.create(text)
                    cfg.hydra.pop("launcher")
                    cfg.hydra.runtime.choices.pop("hydra/launcher")
                    cfg.hydra.overrides.hydra = [o for o in cfg.hydra.overrides.hydra if "launcher" not in o]
                    text = OmegaConf.to_yaml(cfg)
                files[path.relative_to(sweep_dir).as_posix()] = text
    return returns, files


def test_same_jobs_dirs_and_files_as_the_basic_launcher(hydra_sweep_runner, hydra_restore_singletons, tmp_path):
    basic = sweep_outputs(hydra_sweep_runner, "basic", tmp_path / "basic")
    vectorized = sweep_outputs(hydra_sweep_runner, "vectorized", tmp_path / "vectorized")
    assert [r[2] for r in vectorized[0][:3]] == [(0, "x", 0), (1, "x", 1), (2, "x", 2)]
    assert vectorized[0] == basic[0]
    assert sorted(vectorized[1]) == sorted(basic[1]) and "2/.hydra/overrides.yaml" in vectorized[1]
    assert vectorized[1] == basic[1]


def test_lightsweep_multirun_composes_with_vectorized_launcher(make_cfg) -> None:
    cfg = make_cfg("hydra/launcher=vectorized", "hydra.launcher.max_members=8", "hydra.mode=MULTIRUN")
    assert cfg.hydra.launcher._target_.endswith("VectorizedLauncher")
    launcher = instantiate(cfg.hydra.launcher)
    assert isinstance(launcher, vectorized_launcher.VectorizedLauncher)
    assert launcher.max_members == 8


def test_max_members_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_members"):
        vectorized_launcher.VectorizedLauncher(max_members=0)


class KeyedLauncher(vectorized_launcher.VectorizedLauncher):
    """Groups jobs by their `model` value; `solo` runs alone. Records what ran, returns the job's num."""

    def group_key(self, sweep_config):
        return None if sweep_config.model == "solo" else sweep_config.model

    def run_alone(self, job):
        self.ran.append([job.idx])
        return done(job)

    def run_group(self, unit):
        self.ran.append([job.idx for job in unit.jobs])
        return [done(job) for job in unit.jobs]


def done(job):
    ret = JobReturn(overrides=job.overrides, status=JobStatus.COMPLETED)
    ret.return_value = job.config.hydra.job.num
    return ret


def keyed_launcher(tmp_path, max_members):
    """A launcher whose 'composition' turns `model=X` overrides into a config, no Hydra app needed."""
    master = OmegaConf.create(
        {"hydra": {"hydra_logging": {"root": None}, "verbose": False, "sweep": {"dir": str(tmp_path)}}}
    )

    def load_sweep_config(master_config, overrides):
        cfg = OmegaConf.merge(master_config, OmegaConf.from_dotlist(overrides))
        OmegaConf.update(cfg, "hydra.job", {"id": None, "num": None}, force_add=True)
        return cfg

    launcher = KeyedLauncher(max_members=max_members)
    launcher.ran = []
    context = SimpleNamespace(config_loader=SimpleNamespace(load_sweep_config=load_sweep_config))
    launcher.setup(hydra_context=context, task_function=lambda cfg: None, config=master)
    return launcher


def test_plan_groups_by_key_in_sweep_order_and_splits_at_max_members(tmp_path) -> None:
    models = ["a", "b", "solo", "a", "a", "b", "solo", "a"]
    launcher = keyed_launcher(tmp_path, max_members=2)
    units = launcher.plan([[f"model={m}"] for m in models], initial_job_idx=10)
    assert [(u.key, [j.idx for j in u.jobs]) for u in units] == [
        ("a", [10, 13]),
        ("b", [11, 15]),
        (None, [12]),
        ("a", [14, 17]),
        (None, [16]),
    ]
    assert all(j.config.hydra.job.id == j.idx == j.config.hydra.job.num for u in units for j in u.jobs)


def test_plan_splits_a_key_into_groups_of_equal_size(tmp_path) -> None:
    launcher = keyed_launcher(tmp_path, max_members=4)
    units = launcher.plan([["model=a"]] * 9, initial_job_idx=0)
    assert [[j.idx for j in u.jobs] for u in units] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]


def test_launch_returns_one_result_per_job_in_sweep_order(tmp_path, caplog) -> None:
    models = ["a", "solo", "a", "b"]
    launcher = keyed_launcher(tmp_path, max_members=64)
    with caplog.at_level("INFO"):
        returns = launcher.launch([[f"model={m}"] for m in models], initial_job_idx=3)
    assert launcher.ran == [[3, 5], [4], [6]]
    assert [r.return_value for r in returns] == [3, 4, 5, 6]
    assert "Vectorized launcher: 4 jobs, 1 groups, 2 run alone" in caplog.text
