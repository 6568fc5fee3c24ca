"""Hydra multirun -> MLflow parent/child runs -> comparison report, with real stores.

The fast tier's sweeps run in this process (helpers.sweep_in_process: `python train.py -m`'s own entry
with its argv and environment, without a new interpreter's imports); joblib's jobs still run in worker
processes. A sweep as its own process (signals, exit status): reliability/test_lifecycle.py; the slow
tier's sweeps here run as the CLI.
"""

from __future__ import annotations

import pytest
from helpers import (
    SECRET_ENV,
    SECRET_OVERRIDES,
    TINY,
    artifact_paths,
    cli_env,
    everything_logged,
    run_in_process,
    run_sweep,
    sweep_in_process,
    sweep_runs,
)
from helpers import SWEEP_FAST as FAST

from lightsweep.sweeps.report import find_sweep


def test_optimizer_sweep_lands_as_parent_with_children_and_report(tmp_path):
    env = cli_env(tmp_path, **SECRET_ENV)  # secrets in the environment and the config: none is logged
    result = sweep_in_process(
        tmp_path, "model=softmax", "optimizer=sgd,momentum,adam", *SECRET_OVERRIDES, *FAST, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client, parents, children, runs = sweep_runs(tmp_path)
    assert len(parents) == 1 and len(children) == 3 and len(runs) == 4  # nothing outside the sweep
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert {c.info.run_name for c in children} == {
        "softmax-sgd-lr0.1-s42",
        "softmax-momentum-lr0.05-s42",
        "softmax-adam-lr0.001-s42",
    }
    assert sorted(c.data.tags["lightsweep.job"] for c in children) == ["0", "1", "2"]
    assert {c.data.tags["lightsweep.sweep_id"] for c in children} == {parent.data.tags["lightsweep.sweep_id"]}
    assert all(c.info.status == "FINISHED" for c in children)
    assert parent.data.params["sweep.optimizer"] == "sgd,momentum,adam"
    # Every child logged each epoch's val/acc (2 epochs): nothing lost.
    for child in children:
        assert len(client.get_metric_history(child.info.run_id, "val/acc")) == 2

    artifacts = artifact_paths(client, parent.info.run_id)
    expected = {
        "report/report.md",
        "report/report.html",
        "report/summary.csv",
        "report/learning_curves.png",
        "report/test_accuracy.png",
        "sweep_config.yaml",
        "sweep_grid.yaml",
    }
    assert expected <= artifacts
    report_md = client.download_artifacts(parent.info.run_id, "report/report.md", str(tmp_path / "dl"))
    text = open(report_md).read()
    for child in children:
        assert child.info.run_name.rsplit("-s", 1)[0] in text and child.info.run_id in text
    html = open(client.download_artifacts(parent.info.run_id, "report/report.html", str(tmp_path / "dl"))).read()
    assert html.count("data:image/png;base64,") >= 2  # self-contained
    assert "| configuration |" in result.stdout  # the table is printed at the end

    # Each job wrote its checkpoints to its own dir, named by what varies.
    sweep_dir = next((tmp_path / "outputs" / "multiruns").iterdir())
    job_dirs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and p.name != "report")
    assert job_dirs == ["0-optimizer=sgd", "1-optimizer=momentum", "2-optimizer=adam"]
    for job in job_dirs:
        assert (sweep_dir / job / "checkpoints" / "last.ckpt").is_file()
    assert (sweep_dir / "report" / "report.html").is_file()

    assert all(c.data.params["service.password"] == "***" for c in children)
    assert "secret-" not in everything_logged(client, tmp_path)  # params, tags, configs, grid, report


def test_optuna_search_trials_are_children_of_one_parent(tmp_path):
    result = sweep_in_process(
        tmp_path,
        "hparams_search=lr_optuna",
        "model=softmax",
        "optimizer=adam",
        *TINY,
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.n_startup_trials=2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Best value" in result.stdout + result.stderr
    client, parents, children, runs = sweep_runs(tmp_path)
    assert len(parents) == 1 and len(children) == 3 and len(runs) == 4
    lrs = {float(c.data.params["optimizer.lr"]) for c in children}
    assert len(lrs) == 3 and all(1e-5 <= lr <= 1.0 for lr in lrs)
    assert all("-lr" in c.info.run_name and "-wd" in c.info.run_name for c in children)
    assert all("test/acc" not in c.data.metrics and "val/acc" in c.data.metrics for c in children)
    assert "report/report.html" in artifact_paths(client, parents[0].info.run_id)


def test_optuna_study_survives_failed_trials(tmp_path):
    # Every trial fails (an unknown optimizer argument): the study still ends, each trial scored 0.0;
    # a sweep where every job fails fails its parent.
    result = sweep_in_process(
        tmp_path,
        "hparams_search=lr_optuna",
        "+optimizer.bogus=1",
        *TINY,
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=2",
    )
    assert result.returncode == 1, result.stderr[-2000:]  # the study ended; the sweep says jobs failed
    assert "Best value: 0.0" in result.stdout + result.stderr
    _, parents, children, _ = sweep_runs(tmp_path)
    assert [c.info.status for c in children] == ["FAILED", "FAILED"]
    assert all("optimizer.bogus" in c.data.tags["lightsweep.failure_reason"] for c in children)
    assert parents[0].info.status == "FAILED"


@pytest.mark.slow
def test_optimizer_benchmark_tunes_then_tests(tmp_path):
    result = run_sweep(
        tmp_path,
        "experiment=optimizer_benchmark",
        *FAST,
        "hydra.sweeper.optimizers=[sgd,adam]",
        "hydra.sweeper.lr_log10_min=-3",
        "hydra.sweeper.lr_log10_max=12",
        "hydra.sweeper.lr_points=3",
        "hydra.sweeper.seeds=[1,2]",
        "model=mlp",
        timeout=900,
    )
    client, parents, children, _ = sweep_runs(tmp_path, "optimizer_benchmark")
    tune = [c for c in children if c.data.tags["stage"] == "tune"]
    final = [c for c in children if c.data.tags["stage"] == "final"]
    assert len(tune) == 6 and len(final) == 4  # 2 optimizers x 3 lrs, then 2 optimizers x 2 seeds
    assert all("test/acc" not in c.data.metrics for c in tune)
    assert all("test/acc" in c.data.metrics for c in final)
    # The grid's top (1e12) diverges for both; it is never chosen.
    assert sum(c.data.tags.get("lightsweep.diverged") == "true" for c in tune) >= 2
    parent = parents[0]
    for opt in ("sgd", "adam"):
        best_val = max(
            (c for c in tune if c.data.tags["optimizer"] == opt and c.info.status == "FINISHED"),
            key=lambda c: c.data.metrics["val/acc"],
        )
        assert parent.data.params[f"best_lr.{opt}"] == best_val.data.params["optimizer.lr"]
        assert {c.data.params["optimizer.lr"] for c in final if c.data.tags["optimizer"] == opt} == {
            best_val.data.params["optimizer.lr"]
        }
    artifacts = artifact_paths(client, parent.info.run_id)
    assert {"report/lr_sensitivity.png", "report/report.md"} <= artifacts
    text = open(client.download_artifacts(parent.info.run_id, "report/report.md", str(tmp_path))).read()
    assert "Tuned comparison" in text and "epoch time vs sgd" in text
    assert result.returncode == 1  # diverged grid points count as failed jobs


def test_a_failed_report_fails_the_parent_and_the_compare_pipeline_rebuilds_it(tmp_path):
    """A sweep whose report cannot be written (a file where its folder goes): the parent is FAILED with
    the reason, the jobs' runs are kept, and the command the error names rebuilds the report; `sweep=latest`
    finds the same sweep. The jobs run in parallel (joblib): each logs Lightning to its own log file."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "report").write_text("a file where the report folder goes")
    result = sweep_in_process(
        tmp_path,
        "optimizer=sgd,adam",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        *TINY,
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 1
    assert "error: the sweep report failed" in result.stderr, result.stderr[-2000:]
    client, parents, children, _ = sweep_runs(tmp_path)
    parent = parents[0].info.run_id
    assert sorted(c.info.status for c in children) == ["FINISHED", "FINISHED"]
    assert parents[0].info.status == "FAILED"
    assert parents[0].data.tags["lightsweep.failure_reason"].startswith("report: ")
    assert all("checkpoints/" in " ".join(artifact_paths(client, c.info.run_id)) for c in children)
    logs = sorted(sweep.glob("*/cli.log"))
    assert len(logs) == 2
    for log in logs:
        assert "[pytorch_lightning" in log.read_text(), log

    command = f"python pipelines/compare.py sweep={parent}"
    assert f"rebuild it with `{command}`" in result.stderr
    rebuilt = run_in_process(tmp_path, "target_acc=0.5", script=tuple(command.split()[1:]))
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    folder = tmp_path / "outputs" / "reports" / parent
    assert (folder / "report.html").is_file()
    assert "epochs to 0.5" in (folder / "report.md").read_text()
    assert "report/report.html" in artifact_paths(client, parent)

    assert f"Logged to parent run {parent}" in rebuilt.stdout
    assert find_sweep(client, "latest", None) == find_sweep(client, "latest", "lightsweep") == parent
    bad = run_in_process(tmp_path, "experiment_name=nope", script=("pipelines/compare.py", "sweep=latest"))
    assert bad.returncode == 2 and bad.stderr.startswith("error: no MLflow experiment named 'nope'")


@pytest.mark.slow
def test_eight_parallel_jobs_on_a_fresh_store_lose_nothing(tmp_path):
    """joblib starts 8 jobs at once on a store that does not exist yet: 0 failed, 0 misfiled, 0 lost."""
    result = run_sweep(
        tmp_path,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=8",
        "seed=range(1,9)",
        "model=softmax",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=12",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        "trainer.log_every_n_steps=3",
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client, parents, children, runs = sweep_runs(tmp_path)
    assert len(parents) == 1 and len(children) == 8 and len(runs) == 9
    assert all(c.info.status == "FINISHED" for c in children)
    assert sorted(c.info.run_name for c in children) == sorted(f"softmax-adam-lr0.001-s{s}" for s in range(1, 9))
    default = client.get_experiment_by_name("Default")
    assert default is None or not client.search_runs([default.experiment_id])  # nothing misfiled
    for child in children:
        run_id = child.info.run_id
        assert len(client.get_metric_history(run_id, "train/loss")) == 12  # every 3rd of 12 steps, 3 epochs
        assert len(client.get_metric_history(run_id, "val/acc")) == 3
        assert len(client.get_metric_history(run_id, "test/acc")) == 1


def failed_jobs(client, parent) -> list[dict]:
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(open(client.download_artifacts(parent.info.run_id, "failed_jobs.json", tmp)).read())


def test_a_job_that_fails_before_its_run_exists_counts(tmp_path):
    """`seed=???` (a placeholder left in the grid) fails job 1 while its run is named, before it exists:
    the summary line, the parent (tag and failed_jobs.json) and the exit code count it."""
    result = sweep_in_process(tmp_path, "data=iris", "seed=1,???", *TINY)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "2 jobs, 1 failed (0 diverged)" in result.stdout
    client, (parent,), children, _ = sweep_runs(tmp_path)
    assert [c.info.status for c in children] == ["FINISHED"]  # job 1 has no run
    assert parent.info.status == "FINISHED" and parent.data.tags["lightsweep.failed_jobs"] == "1"
    (failed,) = failed_jobs(client, parent)
    assert failed["job"] == 1 and failed["run_id"] is None and failed["overrides"] == "seed=???"
    assert failed["reason"].startswith("MissingMandatoryValue: Missing mandatory value: seed")
    report = (next((tmp_path / "outputs" / "multiruns").iterdir()) / "report" / "report.md").read_text()
    assert "2 jobs, 1 failed (0 diverged, 1 before their run existed)" in report
    assert "## Jobs that failed before their run existed" in report and "| 1 | seed=??? |" in report


@pytest.mark.slow
def test_every_job_failing_before_its_run_fails_the_sweep_with_any_launcher(tmp_path):
    """Parallel jobs (joblib: each in a worker process) that all fail before their run exists; then the
    same without MLflow (logger=none): the jobs' records are all there is to count."""
    result = run_sweep(tmp_path, "seed=???", "optimizer=sgd,adam", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert result.returncode == 1, result.stderr[-3000:]
    assert "2 jobs, 2 failed (0 diverged)" in result.stdout
    client, (parent,), children, _ = sweep_runs(tmp_path)
    assert children == [] and parent.info.status == "FAILED" and parent.data.tags["lightsweep.failed_jobs"] == "2"
    assert [(f["job"], f["run_id"], f["overrides"]) for f in failed_jobs(client, parent)] == [
        (0, None, "optimizer=sgd"),
        (1, None, "optimizer=adam"),
    ]

    untracked = run_sweep(tmp_path, "seed=???", "optimizer=sgd,adam", "logger=none")
    assert untracked.returncode == 1
    assert "2 failed jobs: #0 (MissingMandatoryValue" in untracked.stderr, untracked.stderr[-3000:]
