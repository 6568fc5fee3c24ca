"""`hydra/sweeper=optuna` as a Hydra plugin (src/hydra_plugins/lightsweep_optuna), on Hydra's test app.

hydra-optuna-sweeper's own tests, where they apply to this plugin (discovery, the search-space table,
launching batches, the examples: a sphere, multi-objective, custom search space, grid), plus what this
plugin adds: seeded samplers, persistent studies continued after an interrupt or a killed sweep, one
study per search, and bad input refused in one line. Hydra's launcher suites (LauncherTestSuite,
BatchedSweeperTestSuite) check a grid's exact jobs and order; an Optuna search samples its jobs, so
they do not apply. Everything runs in-process on Hydra's `compose.yaml` (foo: 10, bar: 100) with
in-memory or tmp_path sqlite studies: no training.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import optuna
import pytest
from helpers import free_port
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.lightsweep_optuna import optuna_sweeper
from lightsweep.errors import LightsweepError
from lightsweep.sweeps.study import SEARCH_ATTR, distribution_of, parse_search_space

pytestmark = pytest.mark.usefixtures("hydra_version_base_of_a_fresh_process")  # Hydra's test app (conftest)


def sweep(hydra_sweep_runner, tmp_path: Path, *overrides: str, task=None, name: str = "sweep"):
    """A sweep of Hydra's test app (`foo`, `bar`) with this sweeper: (batches of JobReturns, optimization_results)."""
    sweep_dir = tmp_path / name
    runner = hydra_sweep_runner(
        calling_file=None,
        calling_module="hydra.test_utils.a_module",
        task_function=task or (lambda cfg: float(cfg.foo) ** 2 + float(cfg.bar) ** 2),
        config_path="configs",
        config_name="compose.yaml",
        overrides=["hydra/sweeper=optuna", "hydra/launcher=basic", "hydra.job.chdir=False", *overrides],
        temp_dir=sweep_dir,
    )
    with runner:
        batches = runner.returns
        results = OmegaConf.to_container(OmegaConf.load(sweep_dir / "optimization_results.yaml"))
    return batches, results


def storage_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def load(tmp_path: Path, name: str) -> optuna.Study:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optuna.load_study(study_name=name, storage=storage_url(tmp_path))


def test_discovery() -> None:
    assert optuna_sweeper.OptunaSweeper.__name__ in [x.__name__ for x in Plugins.instance().discover(Sweeper)]


@pytest.mark.parametrize(
    "override, expected",
    [
        ("key=choice(1,2)", CategoricalDistribution([1, 2])),
        ("key=choice(true, false)", CategoricalDistribution([True, False])),
        ("key=choice('hello', 'world')", CategoricalDistribution(["hello", "world"])),
        ("key=shuffle(range(1,3))", CategoricalDistribution((1, 2))),
        ("key=a,b", CategoricalDistribution(["a", "b"])),
        ("key=interval(1, 5)", FloatDistribution(1, 5)),
        ("key=int(interval(1, 5))", IntDistribution(1, 5)),
        ("key=tag(log, interval(1, 5))", FloatDistribution(1, 5, log=True)),
        ("key=tag(log, int(interval(1, 5)))", IntDistribution(1, 5, log=True)),
        # Hydra's range stops before `stop`, as the basic sweeper sweeps it (hydra-optuna-sweeper included
        # `stop`: range(1,3) was 1..3 there, 1..2 here and in a basic sweep).
        ("key=range(1,3)", IntDistribution(1, 2)),
        ("key=range(1,10,3)", IntDistribution(1, 7, step=3)),
        ("key=range(0.5, 5.5, step=1)", FloatDistribution(0.5, 4.5, step=1)),
        ("key=5", None),
    ],
)
def test_a_sweep_override_becomes_an_optuna_distribution(override, expected) -> None:
    (parsed,) = OverridesParser.create().parse_overrides([override])
    actual = distribution_of(parsed)
    if isinstance(expected, CategoricalDistribution):
        assert isinstance(actual, CategoricalDistribution) and set(actual.choices) == set(expected.choices)
    else:
        assert actual == expected


def test_params_then_the_command_line_give_the_space_fixed_values_and_deletions() -> None:
    space = parse_search_space(
        {"optimizer.lr": "tag(log, interval(1e-5, 1.0))", "model": "mlp", "seed": "choice(1, 2)"},
        ["seed=7", "key3=range(1,3)", "~z", "+w=1"],
    )
    assert space.distributions == {
        "optimizer.lr": FloatDistribution(1e-5, 1.0, log=True),
        "key3": IntDistribution(1, 2),
    }
    assert space.fixed == {"model": "mlp", "seed": "7", "+w": "1"}  # the command line's seed=7 wins
    assert space.deletes == ["~z"]


@pytest.mark.parametrize(
    "params, arguments, needle",
    [
        ({"optimizer.lr": "interval(1e-5)"}, [], "'optimizer.lr=interval(1e-5)' (hydra.sweeper.params.optimizer.lr)"),
        ({"optimizer.lr": "tag(log, interval(0, 1))"}, [], "hydra.sweeper.params.optimizer.lr"),
        ({}, ["seed=range(5, 1)"], "'seed=range(5, 1)' (the command line) is not a valid search space"),
        ({}, ["x=glob(*)"], "'x=glob(*)' (the command line)"),
        ({"model": "mlp"}, [], "nothing to search"),
    ],
    ids=["unparsable", "log-of-zero", "empty-range", "glob", "nothing"],
)
def test_a_malformed_search_space_is_refused_naming_the_entry(params, arguments, needle) -> None:
    with pytest.raises(LightsweepError) as err:
        parse_search_space(params, arguments)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_trials_are_launched_in_batches_of_n_jobs(hydra_sweep_runner, tmp_path) -> None:
    batches, results = sweep(
        hydra_sweep_runner,
        tmp_path,
        "hydra.sweeper.n_trials=8",
        "hydra.sweeper.n_jobs=3",
        "bar=range(-3, 4)",
        "foo=interval(-2.0, 2.0)",
    )
    assert [len(b) for b in batches] == [3, 3, 2]
    jobs = [r for b in batches for r in b]
    assert [r.hydra_cfg.hydra.job.num for r in jobs] == list(range(8))  # job numbers follow the trials'
    assert all(-3 <= r.cfg.bar <= 3 and -2.0 <= r.cfg.foo <= 2.0 for r in jobs)
    best = min(jobs, key=lambda r: r.return_value)
    assert results["best_value"] == best.return_value
    assert results["best_params"] == {"bar": best.cfg.bar, "foo": best.cfg.foo}


def test_the_sphere_example_finds_its_minimum_region_and_keeps_the_study(hydra_sweep_runner, tmp_path) -> None:
    """hydra-optuna-sweeper's example: a sphere over a range and a choice, TPE seeded, stored in sqlite."""
    batches, results = sweep(
        hydra_sweep_runner,
        tmp_path,
        "hydra.sweeper.n_trials=20",
        "hydra.sweeper.n_jobs=1",
        f"hydra.sweeper.storage={storage_url(tmp_path)}",
        "hydra.sweeper.study_name=sphere",
        "hydra.sweeper.sampler.seed=123",
        "foo=range(-5.5, 5.5, 0.5)",
        "bar=choice(-5, 0, 5)",
    )
    study = load(tmp_path, "sphere")
    assert len(study.trials) == 20 and {t.state for t in study.trials} == {TrialState.COMPLETE}
    assert results["best_value"] == study.best_value == min(r.return_value for b in batches for r in b)
    assert results["best_params"] == {"foo": study.best_params["foo"], "bar": study.best_params["bar"]}
    # hydra-optuna-sweeper's threshold for this example (the 95th percentile over 1000 seeds)
    assert results["best_value"] <= 2.27
    assert study.user_attrs[SEARCH_ATTR]["space"].keys() == {"foo", "bar"}


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "qmc", "nsgaii", "gp"])
def test_every_sampler_is_seeded(hydra_sweep_runner, tmp_path, sampler) -> None:
    def params(seed: int, name: str) -> list:
        batches, _ = sweep(
            hydra_sweep_runner,
            tmp_path,
            f"hydra/sweeper/sampler={sampler}",
            f"hydra.sweeper.sampler.seed={seed}",
            "hydra.sweeper.n_trials=4",
            "hydra.sweeper.n_jobs=1",
            "foo=interval(-5.0, 5.0)",
            "bar=interval(-5.0, 5.0)",
            name=name,
        )
        return [(r.cfg.foo, r.cfg.bar) for b in batches for r in b]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GP: "lengthscale" fits on 4 points
        first, again, other = params(7, "a"), params(7, "b"), params(8, "c")
    assert first == again and len(set(first)) == 4
    assert first != other


def test_multi_objective_returns_the_pareto_front(hydra_sweep_runner, tmp_path) -> None:
    batches, results = sweep(
        hydra_sweep_runner,
        tmp_path,
        "hydra.sweeper.direction=[minimize,minimize]",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.sampler.seed=123",
        "hydra.sweeper.n_trials=12",
        "foo=range(0, 5)",
        "bar=range(0, 3)",
        task=lambda cfg: [cfg.foo, (cfg.foo - 4) ** 2 + cfg.bar],
    )
    points = [tuple(r.return_value) for b in batches for r in b]
    front = [tuple(s["values"]) for s in results["solutions"]]
    assert front and set(front) <= {tuple(map(float, p)) for p in points}
    for x in front:  # not dominated by any trial
        assert not any(all(a <= b for a, b in zip(p, x)) and any(a < b for a, b in zip(p, x)) for p in points)


def configure(cfg, trial) -> None:
    """A custom search space (hydra.sweeper.custom_search_space): `+baz` depends on `foo`."""
    foo = trial.params["foo"]
    trial.suggest_float("+baz", foo - 0.3, foo + 0.3)


def test_a_custom_search_space_adds_parameters_by_code(hydra_sweep_runner, tmp_path) -> None:
    batches, results = sweep(
        hydra_sweep_runner,
        tmp_path,
        "hydra.sweeper.custom_search_space=test_optuna_sweeper.configure",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.n_trials=5",
        "foo=interval(-5.0, 5.0)",
        task=lambda cfg: float(cfg.foo) ** 2 + float(cfg.baz) ** 2,
    )
    jobs = [r for b in batches for r in b]
    assert len(jobs) == 5 and all(abs(r.cfg.baz - r.cfg.foo) <= 0.3 for r in jobs)
    assert abs(results["best_params"]["+baz"] - results["best_params"]["foo"]) <= 0.3


def test_the_grid_sampler_runs_each_point_once(hydra_sweep_runner, tmp_path) -> None:
    batches, _ = sweep(
        hydra_sweep_runner,
        tmp_path,
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.n_trials=20",  # the grid has 6 points: 6 trials
        "foo=choice(1, 2)",
        "bar=range(1, 4)",
    )
    points = [(r.cfg.foo, r.cfg.bar) for b in batches for r in b]
    assert sorted(points) == [(f, b) for f in (1, 2) for b in (1, 2, 3)]


def test_a_study_continues_until_n_trials_and_retries_the_trials_an_interrupt_stopped(hydra_sweep_runner, tmp_path):
    """Ctrl-C in the 3rd trial: its trial is failed and queued again with the same parameters; the same
    command then continues the study (not a new one) until 5 trials are complete, job numbers going on."""
    common = [
        f"hydra.sweeper.storage={storage_url(tmp_path)}",
        "hydra.sweeper.n_trials=5",
        "hydra.sweeper.n_jobs=1",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.sampler.seed=3",
        "foo=interval(-5.0, 5.0)",
        "bar=7",
    ]
    calls = []

    def interrupted_at_the_third(cfg):
        calls.append(cfg.foo)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return float(cfg.foo) ** 2

    with pytest.raises(KeyboardInterrupt):
        sweep(hydra_sweep_runner, tmp_path, *common, task=interrupted_at_the_third, name="first")
    (name,) = [s.study_name for s in optuna.get_all_study_summaries(storage_url(tmp_path))]
    assert name.startswith("search-")  # study_name: null names the study after the search
    study = load(tmp_path, name)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL, TrialState.WAITING]
    assert study.trials[3].params == study.trials[2].params  # queued again

    batches, results = sweep(hydra_sweep_runner, tmp_path, *common, name="second")
    study = load(tmp_path, name)
    assert [t.state for t in study.trials].count(TrialState.COMPLETE) == 5 and len(study.trials) == 6
    jobs = [r for b in batches for r in b]
    assert [r.hydra_cfg.hydra.job.num for r in jobs] == [3, 4, 5]  # trial 3 (the retry), 4 and 5
    assert jobs[0].cfg.foo == calls[2]  # the interrupted trial's parameters
    assert results["best_value"] == min(t.value for t in study.trials if t.state == TrialState.COMPLETE)


def test_a_trial_left_running_by_a_killed_sweep_is_failed_and_retried(hydra_sweep_runner, tmp_path, capsys):
    """What kill -9 leaves: a RUNNING trial whose sweep stopped beating. The next run waits until its
    heartbeat is stale (2 intervals), fails it and runs its parameters again."""
    common = [
        f"hydra.sweeper.storage={storage_url(tmp_path)}",
        "hydra.sweeper.study_name=killed",
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.n_trials=3",
        "hydra/sweeper/sampler=random",
        "foo=interval(-5.0, 5.0)",
    ]
    sweep(hydra_sweep_runner, tmp_path, *common, "hydra.sweeper.n_trials=2", name="first")
    storage = optuna.storages.RDBStorage(storage_url(tmp_path))
    study = optuna.load_study(study_name="killed", storage=storage)
    dead = study.ask({"foo": FloatDistribution(-5.0, 5.0)})  # a killed sweep's trial: it beat once
    study_id = storage.get_study_id_from_name("killed")
    storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(study_id, dead.number))

    capsys.readouterr()
    batches, _ = sweep(hydra_sweep_runner, tmp_path, *common, name="second")
    assert "Study killed: 1 trial(s) RUNNING: waiting up to 3 s" in capsys.readouterr().out
    trials = load(tmp_path, "killed").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 + [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[3].params == dead.params and trials[3].system_attrs["failed_trial"] == dead.number
    assert len([r for b in batches for r in b]) == 1  # 3 complete: one more


def test_a_seeded_sampler_does_not_repeat_its_draws_when_a_study_continues(hydra_sweep_runner, tmp_path) -> None:
    common = [
        f"hydra.sweeper.storage={storage_url(tmp_path)}",
        "hydra.sweeper.study_name=seeded",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.sampler.seed=5",
        "foo=interval(-5.0, 5.0)",
    ]
    sweep(hydra_sweep_runner, tmp_path, *common, "hydra.sweeper.n_trials=2", name="first")
    sweep(hydra_sweep_runner, tmp_path, *common, "hydra.sweeper.n_trials=4", name="second")
    values = [t.params["foo"] for t in load(tmp_path, "seeded").trials]
    assert len(values) == 4 and len(set(values)) == 4


def test_another_search_under_the_same_study_name_is_refused(hydra_sweep_runner, tmp_path, capsys) -> None:
    common = [
        f"hydra.sweeper.storage={storage_url(tmp_path)}",
        "hydra.sweeper.study_name=mine",
        "hydra.sweeper.n_trials=2",
    ]
    sweep(hydra_sweep_runner, tmp_path, *common, "foo=interval(-5.0, 5.0)", "bar=1", name="first")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        sweep(hydra_sweep_runner, tmp_path, *common, "foo=interval(-5.0, 5.0)", "bar=2", name="second")
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: hydra.sweeper.study_name=mine: that study in sqlite:///")
    assert "another search (its fixed overrides are [bar=1], here [bar=2])" in line
    assert len(load(tmp_path, "mine").trials) == 2  # untouched


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["hydra.sweeper.sampler=annealing"], "hydra.sweeper.sampler=annealing is not one of tpe, random, cmaes, qmc"),
        (
            ["hydra.sweeper.sampler._target_=os.getcwd"],
            "hydra.sweeper.sampler._target_=os.getcwd is not in optuna.samplers",
        ),
        (
            ["+hydra.sweeper.sampler.bogus=1"],
            "hydra.sweeper.sampler: optuna.samplers.TPESampler rejected its arguments",
        ),
        (["hydra.sweeper.pruner=sometimes"], "hydra.sweeper.pruner=sometimes is not one of none, median"),
        (["hydra/sweeper/pruner=median"], "hydra.sweeper.pruner prunes on the validation metric"),
        (["hydra.sweeper.direction=up"], "hydra.sweeper.direction=up must be minimize or maximize"),
        (["hydra.sweeper.n_trials=0"], "hydra.sweeper.n_trials=0 must be an integer >= 1"),
        (["foo=tag(log, interval(-1.0, 1.0))"], "'foo=tag(log, interval(-1.0, 1.0))' (the command line)"),
        (["hydra.sweeper.storage=nosuchdb://x"], "hydra.sweeper.storage=nosuchdb://x: cannot open the Optuna storage"),
        ([f"hydra.sweeper.storage=postgresql+psycopg2://u:pw@127.0.0.1:{free_port()}/optuna"], "u:***@127.0.0.1"),
        (["hydra.sweeper.custom_search_space=nowhere.fn"], "hydra.sweeper.custom_search_space=nowhere.fn"),
    ],
    ids=[
        "unknown-sampler",
        "sampler-outside-optuna",
        "sampler-argument",
        "unknown-pruner",
        "pruner-without-metric",
        "direction",
        "n-trials",
        "space",
        "storage-url",
        "storage-unreachable",
        "custom-search-space",
    ],
)
def test_bad_input_is_refused_in_one_line_before_any_job(hydra_sweep_runner, tmp_path, capsys, overrides, needle):
    calls = []
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        sweep(hydra_sweep_runner, tmp_path, "bar=interval(0.0, 1.0)", *overrides, task=calls.append)
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and needle in line, line
    assert "pw" not in line  # a storage password is never printed
    assert calls == []


def test_a_failed_job_fails_its_trial_and_stops_the_sweep_above_max_failure_rate(hydra_sweep_runner, tmp_path):
    def fails_for_large_foo(cfg):
        if cfg.foo > 0:
            raise RuntimeError("foo too large")
        return float(cfg.foo)

    common = ["hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=1", "foo=interval(-1.0, 1.0)"]
    batches, _ = sweep(
        hydra_sweep_runner,
        tmp_path,
        *common,
        "hydra.sweeper.n_trials=6",
        "hydra.sweeper.max_failure_rate=1.0",
        task=fails_for_large_foo,
    )
    jobs = [r for b in batches for r in b]
    assert len(jobs) == 6 and any(r.cfg.foo > 0 for r in jobs) and any(r.cfg.foo <= 0 for r in jobs)
    with pytest.raises(RuntimeError, match="foo too large"):
        sweep(
            hydra_sweep_runner, tmp_path, *common, "hydra.sweeper.n_trials=6", task=fails_for_large_foo, name="strict"
        )


def test_nan_results_fail_their_trials_without_ending_the_study(hydra_sweep_runner, tmp_path) -> None:
    batches, results = sweep(
        hydra_sweep_runner,
        tmp_path,
        f"hydra.sweeper.storage={storage_url(tmp_path)}",
        "hydra.sweeper.study_name=nan",
        "hydra.sweeper.n_trials=3",
        "foo=interval(-1.0, 1.0)",
        task=lambda cfg: math.nan if cfg.foo > 0 else float(cfg.foo),
    )
    study = load(tmp_path, "nan")
    assert len(study.trials) == 3  # a failed trial is run again by the next run of the study, not this one
    for trial, job in zip(study.trials, [r for b in batches for r in b]):
        assert trial.state == (TrialState.FAIL if job.cfg.foo > 0 else TrialState.COMPLETE)


@pytest.mark.parametrize(
    "pruner",
    [
        ["hydra/sweeper/pruner=median", "hydra.sweeper.pruner.n_startup_trials=2"],
        ["hydra.sweeper.pruner=successive_halving"],
        ["hydra/sweeper/pruner=hyperband", "hydra.sweeper.pruner.max_resource=3"],
    ],
    ids=["median", "successive-halving", "hyperband"],
)
def test_a_job_its_pruner_stops_makes_its_trial_pruned_and_pruned_trials_count(hydra_sweep_runner, tmp_path, pruner):
    """Each job reports its metric every epoch through lightsweep's pruning callback (found from the job's
    Hydra context and the sweep dir, as `build()` finds it), with a stand-in trainer: jobs the pruner
    stops train fewer than three epochs, the sweeper tells Optuna PRUNED, and the study ends with
    n_trials trials complete or pruned."""
    from types import SimpleNamespace

    import torch

    from lightsweep.callbacks.pruning import trial_pruning

    epochs = {}

    def task(cfg):
        callback = trial_pruning()
        for epoch in range(3):
            trainer = SimpleNamespace(
                callback_metrics={"val/acc": torch.tensor(float(cfg.foo))},
                current_epoch=epoch,
                sanity_checking=False,
                should_stop=False,
                loggers=[],
            )
            callback.on_validation_end(trainer, None)
            if trainer.should_stop:
                break
        epochs[float(cfg.foo)] = epoch + 1
        return float(cfg.foo)

    sweep(
        hydra_sweep_runner,
        tmp_path,
        f"hydra.sweeper.storage={storage_url(tmp_path)}",
        "hydra.sweeper.study_name=pruned",
        "+optimized_metric=val/acc",
        "hydra.sweeper.direction=maximize",
        *pruner,
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.sampler.seed=0",
        "hydra.sweeper.n_trials=8",
        "hydra.sweeper.n_jobs=1",
        "foo=interval(0.0, 1.0)",
        task=task,
    )
    trials = load(tmp_path, "pruned").trials
    assert len(trials) == 8 and {t.state for t in trials} == {TrialState.COMPLETE, TrialState.PRUNED}
    for trial in trials:
        pruned = trial.state == TrialState.PRUNED
        assert (epochs[trial.params["foo"]] < 3) == pruned
        assert len(trial.intermediate_values) == epochs[trial.params["foo"]]
    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert all(t.params["foo"] < best.value for t in trials if t.state == TrialState.PRUNED)


def test_a_continued_quasirandom_study_draws_the_points_of_an_uninterrupted_one(hydra_sweep_runner, tmp_path):
    """The quasirandom sequence (default seed) goes on where the first run stopped: 2 trials then 3 more
    are the 5 trials of one run (AlgoPerf's protocol: a fixed set of quasirandom points)."""
    space = [
        "hydra/sweeper/sampler=qmc",
        "hydra.sweeper.n_jobs=1",
        "foo=interval(-5.0, 5.0)",
        "bar=interval(-5.0, 5.0)",
    ]

    def points(folder: Path, *n_trials: int) -> list:
        url = f"sqlite:///{folder / 'optuna.db'}"
        for i, n in enumerate(n_trials):
            sweep(
                hydra_sweep_runner,
                folder,
                *space,
                f"hydra.sweeper.storage={url}",
                f"hydra.sweeper.n_trials={n}",
                name=f"run{i}",
            )
        (summary,) = optuna.get_all_study_summaries(url)
        return [
            (t.params["foo"], t.params["bar"])
            for t in optuna.load_study(study_name=summary.study_name, storage=url).trials
        ]

    continued, uninterrupted = points(tmp_path / "continued", 2, 5), points(tmp_path / "uninterrupted", 5)
    assert len(continued) == 5 and continued == uninterrupted
