"""The optimizer suite (experiment=optimizer_suite, docs/suite.md): its plan, its jobs, its pruner, bad input,
and the smoke suite end to end on a real MLflow store (slow)."""

from __future__ import annotations

import time
import warnings

import optuna
import pytest
from helpers import CONF, QUIET, artifact_paths, compose_config, run_sweep, store
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from lightsweep.errors import LightsweepError
from lightsweep.sweeps.suite import TARGET_ATTR, SuitePlan, TargetPruner
from lightsweep.vectorized.group import group_key


def job_config(overrides):
    cfg = compose_config(list(overrides))
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])


def plan(*overrides: str) -> SuitePlan:
    """The plan of `python train.py experiment=optimizer_suite <overrides>` (a sweep on the command line is the
    sweeper's to see: not composed)."""
    arguments = ["experiment=optimizer_suite", *overrides]
    config = compose_config([a for a in arguments if "," not in a or "[" in a])
    try:
        return SuitePlan.from_config(config, arguments, compose_config)
    finally:
        GlobalHydra.instance().clear()


def test_the_plan_reads_each_presets_search_space_and_own_schedule():
    suite = plan()
    names = [a.name for a in suite.algorithms]
    assert names == ["nadamw", "radam", "adafactor", "muon", "lion", "schedulefree_adamw", "soap", "prodigy"]
    by_name = {a.name: a for a in suite.algorithms}
    assert by_name["nadamw"].scheduler == "warmup_cosine_steps"
    assert {a.scheduler for n, a in by_name.items() if n != "nadamw"} == {"none"}
    assert set(by_name["muon"].search.space.distributions) == {"optimizer.lr", "optimizer.adamw_lr"}
    assert [w.name for w in suite.workloads] == ["fmnist_softmax", "fmnist_mlp", "digits_mlp", "breast_cancer_softmax"]
    assert (suite.trials, suite.studies) == (4, 2)
    smoke = plan("suite=smoke")
    assert (len(smoke.workloads), len(smoke.algorithms), smoke.trials, smoke.studies) == (2, 3, 2, 1)


def test_a_trial_is_its_workload_its_optimizers_draw_and_its_studys_seed():
    suite = plan()
    mlp = next(w for w in suite.workloads if w.name == "fmnist_mlp")
    muon = next(a for a in suite.algorithms if a.name == "muon")
    cfg = job_config(suite.trial_overrides(mlp, muon, 1, 3, {"optimizer.lr": 0.05, "optimizer.adamw_lr": 0.01}))
    assert "suite" not in cfg
    assert cfg.optimizer.lr == 0.05 and cfg.optimizer.adamw_lr == 0.01
    assert not cfg.scheduler  # the MLP's own cosine is not Muon's
    assert cfg.seed == 43 and cfg.trainer.max_epochs == 4 and list(cfg.model.hidden_sizes) == [64]
    assert cfg.callbacks.early_stopping.stopping_threshold == 0.87 and cfg.optimized_metric == "val/acc"
    assert cfg.callbacks.model_checkpoint is None and cfg.plots is False and cfg.test is False
    assert dict(cfg.tags) == {
        "stage": "trial",
        "suite_workload": "fmnist_mlp",
        "suite_target": 0.87,
        "suite_study": 1,
        "suite_trial": 3,
    }
    assert group_key(cfg)[0] is not None  # trials train as vectorized groups


def test_a_timing_run_is_the_optimizer_alone_at_its_defaults():
    suite = plan()
    nadamw = suite.algorithms[0]
    cfg = job_config(suite.timing_overrides(suite.workloads[0], nadamw))
    assert cfg.scheduler._target_ == "lightsweep.schedules.warmup_cosine"
    assert cfg.optimizer.lr == 0.01 and cfg.trainer.max_steps == 60 and cfg.threads == 1
    assert cfg.callbacks.step_timer._target_ == "lightsweep.callbacks.StepTimer"
    assert group_key(cfg) == (None, "callbacks.step_timer (StepTimer) is a callback for one model")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["suite.trials=0"], "suite.trials=0 must be a whole number >= 1"),
        (["suite.timing_steps=5"], "suite.timing_steps=5 must be a whole number >= 11"),
        (["suite.workloads.digits_mlp.target=1.5"], "suite.workloads.digits_mlp.target=1.5 must be a validation"),
        (["suite.workloads.digits_mlp.epochs=0"], "suite.workloads.digits_mlp.epochs=0 must be a whole number"),
        (["suite.optimizers=[nadamw,adam]"], "suite.optimizers: optimizer=adam has no search_space"),
        (["suite.workloads.digits_mlp.overrides=[mlp]"], "suite.workloads.digits_mlp.overrides must be a list of"),
        (["optimizer.lr=0.1,0.2"], "the optimizer suite runs its own trials; drop the sweep over optimizer.lr"),
    ],
)
def test_bad_suite_settings_are_refused_in_one_line_that_names_the_key(overrides, message):
    with pytest.raises(LightsweepError) as err:
        plan(*overrides)
    assert str(err.value).startswith(message), str(err.value)
    assert "\n" not in str(err.value)


def test_a_presets_malformed_search_space_is_refused_in_one_line():
    from lightsweep.sweeps.suite import algorithm

    config = OmegaConf.create({"optimizer": {"search_space": {"optimizer.lr": "interval(1)"}}})
    with pytest.raises(LightsweepError) as err:
        algorithm("mine", config)
    assert str(err.value).startswith(
        "search space: 'optimizer.lr=interval(1)' (optimizer=mine: optimizer.search_space.optimizer.lr) is"
    )


def test_the_sweep_callback_refuses_a_bad_suite_before_creating_a_run(tmp_path, capsys, monkeypatch):
    from lightsweep.sweeps.hydra_callbacks import MLflowSweepCallback

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = compose_config(["experiment=optimizer_suite", "suite.studies=0", f"paths.log_dir={tmp_path}"], tmp_path)
    capsys.readouterr()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):  # (the app's Hydra, as in a run)
        with pytest.raises(SystemExit) as exit_info:
            MLflowSweepCallback().on_multirun_start(cfg)
    GlobalHydra.instance().clear()
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == "error: suite.studies=0 must be a whole number >= 1"
    assert not (tmp_path / "mlruns").exists()  # refused before the MLflow store was opened


# --- the pruner -----------------------------------------------------------------------------------


def test_a_trial_is_pruned_once_another_of_its_study_reached_the_target_no_later():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(direction="maximize", pruner=TargetPruner())
    study.set_user_attr(TARGET_ATTR, 0.85)
    fast, slow, later, reached = (study.ask() for _ in range(4))
    fast.report(0.5, 0)
    slow.report(0.6, 0)
    assert not slow.should_prune()  # nobody has reached the target yet
    fast.report(0.9, 1)  # fast reaches the target at epoch 1
    assert not fast.should_prune()
    later.report(0.7, 0)
    assert not later.should_prune()  # at epoch 0 it may still be the fastest
    slow.report(0.8, 1)
    assert slow.should_prune()  # at epoch 1, below the target: it cannot be faster than fast
    reached.report(0.95, 1)
    assert not reached.should_prune()  # it reached the target too (a tie): it runs on and completes


def test_a_study_without_a_target_never_prunes():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(direction="maximize", pruner=TargetPruner())
    one, other = study.ask(), study.ask()
    one.report(0.99, 0)
    other.report(0.1, 3)
    assert not other.should_prune()


# --- end to end -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_smoke_suite_end_to_end(tmp_path):
    """`python train.py experiment=optimizer_suite suite=smoke` on a real store, within 3 minutes: timing
    runs and trials as children of one parent, the trials vectorized, the report's sections, plot and
    tables on the parent with `score/<optimizer>`, and Optuna told each trial's outcome."""
    started = time.monotonic()
    result = run_sweep(tmp_path, "experiment=optimizer_suite", "suite=smoke", *QUIET)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    assert seconds < 180, seconds
    client = store(tmp_path)
    experiment = client.get_experiment_by_name("optimizer_suite")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    (parent,) = [r for r in runs if r.data.tags.get("lightsweep.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    timing = [c for c in children if c.data.tags["stage"] == "timing"]
    trials = [c for c in children if c.data.tags["stage"] == "trial"]
    assert len(timing) == 2 * 3 and len(trials) == 2 * 3 * 2
    assert all(c.data.metrics["time/step_s"] > 0 and "lightsweep.vectorized" not in c.data.tags for c in timing)
    assert all("lightsweep.vectorized" in c.data.tags for c in trials)
    assert {c.info.status for c in children} == {"FINISHED"}
    assert not any(p.startswith("plots/") for p in artifact_paths(client, trials[0].info.run_id))
    assert parent.info.status == "FINISHED" and parent.data.tags["lightsweep.suite"] == "true"
    scores = {k.split("/", 1)[1]: v for k, v in parent.data.metrics.items() if k.startswith("score/")}
    assert set(scores) == {"nadamw", "muon", "schedulefree_adamw"}
    assert all(0.0 <= s <= 1.0 for s in scores.values()) and max(scores.values()) > 0
    report = artifact_paths(client, parent.info.run_id, "report")
    assert {"report/performance_profile.png", "report/report.html", "report/suite_scores.csv"} <= report
    markdown = open(client.download_artifacts(parent.info.run_id, "report/report.md", str(tmp_path))).read()
    for title in ("Optimizer suite: benchmark scores", "Time to target: digits_mlp", "Chosen hyperparameters"):
        assert title in markdown
    # every trial's outcome was told to its study: PRUNED as many as the runs say were pruned, the rest COMPLETE
    url = f"sqlite:///{tmp_path}/store/optuna.db"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        studies = optuna.get_all_study_summaries(url)
        told = [t.state.name for s in studies for t in optuna.load_study(study_name=s.study_name, storage=url).trials]
    assert len(studies) == 2 * 3 and len(told) == len(trials)
    pruned = sum(r.data.tags.get("lightsweep.pruned") == "true" for r in trials)
    assert told.count("PRUNED") == pruned and told.count("COMPLETE") == len(trials) - pruned
