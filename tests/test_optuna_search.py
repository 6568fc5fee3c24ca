"""lightsweep's Optuna search (`hparams_search=lr_optuna`, docs/search.md): pruning from inside training,
a study's MLflow parent run continued across re-runs, and, end to end (slow tier), a study killed
with `kill -9` and continued, hopeless learning rates pruned, and bad settings refused in one line.

The sweeper as a Hydra plugin, on Hydra's test app, is tests/test_optuna_sweeper.py.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
from helpers import (
    QUIET,
    all_runs,
    assert_short_error,
    cli_env,
    compose_config,
    free_port,
    kill_9_at,
    run_sweep,
    store,
    sweep_runs,
)
from hydra.core.global_hydra import GlobalHydra
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from optuna.trial import TrialState

from lightsweep.callbacks.pruning import OptunaPruning, trial_pruning
from lightsweep.cli import for_sweeper
from lightsweep.sweeps.hydra_callbacks import MLflowSweepCallback, continue_parent_run
from lightsweep.sweeps.study import PRUNED_ATTR, TrialHandoff, open_storage
from lightsweep.tracking.logger import MLFlowLogger

MEDIAN = {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 1, "n_warmup_steps": 0}


def stand_in_trainer(val_acc: float, epoch: int, loggers=(), sanity_checking: bool = False):
    """What a vectorized group gives each member's callbacks: the member's own metrics, epoch, loggers
    and a `should_stop` of its own (the attributes OptunaPruning may use)."""
    return SimpleNamespace(
        callback_metrics={"val/acc": torch.tensor(val_acc)},
        current_epoch=epoch,
        sanity_checking=sanity_checking,
        should_stop=False,
        loggers=list(loggers),
    )


@pytest.fixture
def study(tmp_path):
    """A maximizing study in a sqlite file whose first trial completed at 0.9 after epochs 0 and 1."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    made = optuna.create_study(study_name="s", storage=open_storage(url), direction="maximize")
    first = made.ask()
    first.report(0.9, 0)
    first.report(0.9, 1)
    made.tell(first, 0.9)
    return made, url


def test_a_trial_below_the_median_stops_training_and_says_so(tmp_path, study):
    """A job's pruning callback, found through the sweep dir as a job in another process finds it: it
    reports every epoch's val/acc to its trial; a hopeless one stops (should_stop, no exception), its
    run is tagged and its trial marked pruned; a good one trains on."""
    made, url = study
    hopeless, good = made.ask(), made.ask()
    sweep_dir = tmp_path / "sweep"
    TrialHandoff("s", url, "val/acc", MEDIAN, {"4": hopeless.number, "5": good.number}).write(sweep_dir)
    assert (sweep_dir / ".lightsweep-optuna.json").stat().st_mode & 0o077 == 0  # a URL may hold a password
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    logger = MLFlowLogger(run_id=run_id, tracking_uri=uri)

    callback = trial_pruning(sweep_dir, 4)
    assert isinstance(callback, OptunaPruning) and callback.trial.number == hopeless.number
    callback.on_validation_end(stand_in_trainer(0.05, 0, [logger], sanity_checking=True), None)
    trainer = stand_in_trainer(0.05, 0, [logger])
    callback.on_validation_end(trainer, None)
    assert trainer.should_stop and callback.pruned_epoch == 0
    frozen = made.trials[hopeless.number]
    assert frozen.intermediate_values == {0: pytest.approx(0.05)}  # the sanity check reported nothing
    assert frozen.user_attrs[PRUNED_ATTR] == 0 and frozen.state == TrialState.RUNNING  # the sweeper tells
    assert client.get_run(run_id).data.tags["lightsweep.pruned"] == "true"

    on = trial_pruning(sweep_dir, 5)
    for epoch in (0, 1):
        trainer = stand_in_trainer(0.95, epoch)
        on.on_validation_end(trainer, None)
        assert not trainer.should_stop
    assert made.trials[good.number].intermediate_values == {0: pytest.approx(0.95), 1: pytest.approx(0.95)}
    assert PRUNED_ATTR not in made.trials[good.number].user_attrs


def test_only_trials_of_a_study_that_prunes_get_the_callback(tmp_path, study):
    _, url = study
    sweep_dir = tmp_path / "sweep"
    assert trial_pruning(sweep_dir, 0) is None  # no study in this sweep
    TrialHandoff("s", url, "val/acc", MEDIAN, {"0": 1}).write(sweep_dir)
    assert trial_pruning(sweep_dir, 3) is None  # not one of its jobs
    TrialHandoff("s", url, None, None, {"0": 1}).write(sweep_dir)
    assert trial_pruning(sweep_dir, 0) is None  # pruner none
    assert trial_pruning() is None  # not a Hydra sweep job


def test_a_list_of_metrics_gives_one_value_each():
    cfg = OmegaConf.create({"optimized_metric": ["val/acc", "val/loss"], "objective_on_failure": 0.0})
    assert for_sweeper(cfg, {"val/acc": 0.9, "val/loss": 0.3}) == [0.9, 0.3]
    assert for_sweeper(cfg, {"failed": "diverged"}) == [0.0, 0.0]


def test_continuing_a_parent_run_reopens_it_and_ends_what_a_killed_pass_left_running(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("e")
    parent = client.create_run(experiment).info.run_id
    client.set_tag(parent, "lightsweep.failure_reason", "sweep ended before its report")
    client.set_terminated(parent, "FAILED")
    left = client.create_run(experiment, tags={"mlflow.parentRunId": parent}).info.run_id
    done = client.create_run(experiment, tags={"mlflow.parentRunId": parent}).info.run_id
    client.set_terminated(done, "FINISHED")

    continue_parent_run(client, parent, tmp_path / "second-pass")
    run = client.get_run(parent)
    assert run.info.status == "RUNNING" and run.data.tags["lightsweep.resumed"] == "1"
    assert "lightsweep.failure_reason" not in run.data.tags
    assert run.data.tags["lightsweep.sweep_dir"] == str(tmp_path / "second-pass")
    assert client.get_run(left).info.status == "KILLED"
    assert client.get_run(done).info.status == "FINISHED"


def test_the_sweep_callback_refuses_bad_search_settings_before_creating_a_run(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = compose_config(
        [
            "hparams_search=lr_optuna",
            "hydra/sweeper/pruner=median",
            "optimized_metric=test/acc",
            f"paths.log_dir={tmp_path}",
        ],
        tmp_path,
    )
    capsys.readouterr()
    try:
        with pytest.raises(SystemExit) as exit_info:
            MLflowSweepCallback().on_multirun_start(cfg)
    finally:
        GlobalHydra.instance().clear()
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: hydra.sweeper.pruner prunes on the validation metric") and "test/acc" in line
    assert not (tmp_path / "mlruns").exists()  # refused before the MLflow store was opened


# --- end to end: the command line ------------------------------------------------------------------

DIGITS = [
    "hparams_search=lr_optuna",
    "data=digits",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=4",
    "trainer.log_every_n_steps=2",
]


def study_trials(tmp_path: Path) -> list:
    url = f"sqlite:///{tmp_path}/store/optuna.db"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (summary,) = optuna.get_all_study_summaries(url)
        return optuna.load_study(study_name=summary.study_name, storage=url).trials


@pytest.mark.slow
def test_a_study_killed_after_3_of_6_trials_ends_with_6_trials_under_one_parent(tmp_path):
    """kill -9 in the 4th trial's training; the same command again: 6 complete trials (the killed one
    run again, same parameters), one parent run, continued; the killed trial's run ends KILLED."""
    sweep = [*DIGITS, "hydra.sweeper.n_trials=6", "hydra.sweeper.heartbeat_interval=1", *QUIET]
    kill_9_at(tmp_path, "lightsweep.train:fit_and_test#4", *sweep)  # (the preset sets hydra.mode=MULTIRUN)
    client, parents, children, _ = sweep_runs(tmp_path)
    assert [p.info.status for p in parents] == ["RUNNING"]  # what kill -9 leaves
    trials = study_trials(tmp_path)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3 + [TrialState.RUNNING]

    again = run_sweep(tmp_path, *sweep)
    assert again.returncode == 0, again.stderr[-3000:]
    client, parents, children, runs = sweep_runs(tmp_path)
    (parent,) = parents
    assert parent.info.status == "FINISHED" and parent.data.tags["lightsweep.resumed"] == "1"
    assert f"Sweep parent run {parent.info.run_id} continued" in again.stdout
    trials = study_trials(tmp_path)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 6 and [t.state for t in trials].count(TrialState.FAIL) == 1
    retried = next(t for t in trials if t.system_attrs.get("failed_trial") == 3)
    assert retried.params == trials[3].params and retried.state == TrialState.COMPLETE
    # Trials and runs name each other; the killed trial's run is KILLED, every other child FINISHED.
    by_id = {c.info.run_id: c for c in children}
    for trial in complete:
        run = by_id[trial.user_attrs["mlflow_run_id"]]
        assert run.info.status == "FINISHED" and run.data.tags["optuna.trial"] == str(trial.number)
    assert sorted(c.info.status for c in children) == ["FINISHED"] * 6 + ["KILLED"]
    assert len(runs) == 8  # 7 children and their one parent
    text = open(client.download_artifacts(parent.info.run_id, "report/report.md", str(tmp_path / "dl"))).read()
    assert "1 killed (their sweep stopped while they ran): listed under Runs, not compared" in text


@pytest.mark.slow
def test_hopeless_learning_rates_are_pruned(tmp_path):
    """SGD on digits over lr 1e-7..1 (log): the lower half learns nothing in 3 epochs. Quasirandom
    trials, a median pruner after 2 complete trials: every hopeless trial after those stops after
    its first epoch, its run FINISHED and tagged, its trial PRUNED; the study still counts 6."""
    result = run_sweep(
        tmp_path,
        *DIGITS,
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=null",
        "optimizer=sgd",
        "optimizer.lr=tag(log, interval(1e-7, 1.0))",
        "optimizer.weight_decay=0",
        "hydra.sweeper.n_trials=6",
        "hydra/sweeper/sampler=qmc",
        "hydra.sweeper.sampler.seed=0",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client, parents, children, _ = sweep_runs(tmp_path)
    trials = study_trials(tmp_path)
    assert len(trials) == 6 and {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    hopeless = [t for t in trials[2:] if t.params["optimizer.lr"] < 1e-4]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert len(hopeless) >= 2 and {t.number for t in hopeless} <= {t.number for t in pruned}
    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert best.value > 0.8 and best.params["optimizer.lr"] > 1e-3
    runs = {c.info.run_id: c for c in children}
    for trial in pruned:
        run = runs[trial.user_attrs["mlflow_run_id"]]
        assert run.info.status == "FINISHED" and run.data.tags["lightsweep.pruned"] == "true"
        assert len(client.get_metric_history(run.info.run_id, "val/acc")) == 1  # stopped after epoch 0
    assert f"6 jobs, 0 failed (0 diverged), {len(pruned)} pruned." in result.stdout
    text = open(client.download_artifacts(parents[0].info.run_id, "report/report.md", str(tmp_path / "dl"))).read()
    assert text.count("FINISHED (pruned)") == len(pruned) and f"{len(pruned)} pruned (stopped early" in text


@pytest.mark.slow
@pytest.mark.parametrize(
    "override, needle",
    [
        ("hydra.sweeper.pruner=sometimes", "error: hydra.sweeper.pruner=sometimes is not one of none, median"),
        (
            f"hydra.sweeper.storage=postgresql+psycopg2://me:pw@127.0.0.1:{free_port()}/optuna",
            "error: hydra.sweeper.storage=postgresql+psycopg2://me:***@127.0.0.1",
        ),
    ],
    ids=["unknown-pruner", "unreachable-storage"],  # the others: tests/test_optuna_sweeper.py, in-process
)
def test_bad_search_settings_exit_2_in_one_line_with_no_run(tmp_path, override, needle):
    result = run_sweep(tmp_path, *DIGITS, override, env=cli_env(tmp_path))
    assert_short_error(result, needle)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(needle) and "pw@" not in line
    assert all_runs(store(tmp_path)) == []  # refused before the parent run: nothing RUNNING, nothing at all
