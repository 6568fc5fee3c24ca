"""The report's numbers and rankings from small hand-made run tables: no MLflow store, no training."""

from __future__ import annotations

import ast
import itertools
import math
from pathlib import Path

import pandas as pd
import pytest
from mlflow.entities import Metric, Param, Run, RunData, RunInfo, RunTag

from lightsweep.sweeps.benchmark import benchmark_sections, main_table_runs
from lightsweep.sweeps.report import compared_runs, load_runs, run_stats, runs_table, summarize
from lightsweep.sweeps.runs import CURVE_COLUMNS, RUN_COLUMNS, format_mean_std, markdown_table, mean_std, ranked

_ids = itertools.count()
SWEEPS = Path(__file__).resolve().parents[2] / "src" / "lightsweep" / "sweeps"


def child(
    label: str,
    *,
    test_acc: float | None = None,
    val_acc: dict[int, float] | None = None,
    diverged: bool = False,
    status: str = "FINISHED",
    seconds: float | None = 10.0,
    val_acc_seconds: dict[int, float] | None = None,
    lr: str | None = None,
    stage: str | None = None,
    pruned: bool = False,
):
    """One run as `load_runs` reads it: its row of the `runs` table and its rows of the `curves` table."""
    run_id = f"run-{next(_ids)}"
    run = {
        "run_id": run_id,
        "name": label,
        "label": label,
        "status": status,
        "diverged": diverged,
        "seconds": seconds,
        "test_acc": test_acc,
        "lr": float(lr) if lr else None,
        "optimizer": label,
        "stage": stage,
        "pruned": pruned,
    }
    stamps = val_acc_seconds or {}
    curve = [
        {"run_id": run_id, "key": "val/acc", "epoch": e, "value": v, "seconds": stamps.get(e)}
        for e, v in (val_acc or {}).items()
    ]
    return run, curve


def tables(*children) -> tuple[pd.DataFrame, pd.DataFrame]:
    runs = pd.DataFrame([run for run, _ in children], columns=list(RUN_COLUMNS)).astype(
        {"diverged": bool, "pruned": bool, "seconds": float, "test_acc": float, "lr": float}
    )
    curves = pd.DataFrame([p for _, curve in children for p in curve], columns=list(CURVE_COLUMNS)).astype(
        {"epoch": int, "value": float, "seconds": float}
    )
    return runs, curves


def summary(*children, target_acc: float) -> pd.DataFrame:
    runs, curves = tables(*children)
    return summarize(run_stats(runs, curves, target_acc), target_acc)


def by_config(table: pd.DataFrame) -> dict[str, dict[str, str]]:
    return table.set_index("configuration").to_dict("index")


# --- shared helpers -----------------------------------------------------------------------------
def test_mean_std_skips_missing_and_non_finite_values():
    assert mean_std([0.8, None, math.nan, 0.9, math.inf]) == pytest.approx((0.85, 0.05, 2))
    assert mean_std([0.7]) == (0.7, 0.0, 1)
    mean, std, n = mean_std([None, math.nan])
    assert math.isnan(mean) and math.isnan(std) and n == 0


def test_format_mean_std_shows_a_single_seed_without_std_and_nothing_as_a_dash():
    assert format_mean_std([0.8, 0.9]) == "0.8500 ± 0.0500"
    assert format_mean_std([0.9]) == "0.9000"
    assert format_mean_std([]) == "–"
    assert format_mean_std([2, 3], 1) == "2.5 ± 0.5"


def test_ranked_puts_non_finite_scores_last_and_keeps_ties_in_order():
    table = pd.DataFrame({"name": list("abcdef")})
    assert ranked(table, [0.5, math.nan, 0.9, math.inf, 0.7, 0.9])["name"].tolist() == list("cfeabd")


def test_markdown_table_shows_missing_cells_empty_and_nothing_as_none():
    assert (
        markdown_table(pd.DataFrame([{"a": "1"}, {"a": "2", "b": "x"}])) == "| a | b |\n|---|---|\n| 1 |  |\n| 2 | x |"
    )
    assert markdown_table(pd.DataFrame(columns=["a"])) == "(none)"


def test_benchmark_and_runs_do_not_import_report():
    # The report imports the benchmark sections; an import back would make a cycle again.
    for module in ("benchmark.py", "runs.py"):
        tree = ast.parse((SWEEPS / module).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert "lightsweep.sweeps.report" not in imported, module


# --- loading ------------------------------------------------------------------------------------
class FakeClient:
    """The three MlflowClient calls `load_runs` makes, answered from entities built here."""

    def __init__(self, children: list[Run], histories: dict[tuple[str, str], list[tuple[int, float, int]]]):
        self.children, self.histories = children, histories

    def get_run(self, run_id):
        return Run(RunInfo(run_id, "1", "me", "FINISHED", 0, 1, "active"), RunData())

    def search_runs(self, experiment_ids, filter_string, order_by, max_results):
        assert filter_string == "tags.mlflow.parentRunId = 'parent'"
        return self.children

    def get_metric_history(self, run_id, key):
        return [Metric(key, value, timestamp, step) for step, value, timestamp in self.histories.get((run_id, key), [])]


def stored_run(run_id, name, status="FINISHED", end=9000, params=(), metrics=(), **tags):
    info = RunInfo(run_id, "1", "me", status, 1000, end, "active", run_name=name)
    return Run(
        info,
        RunData(
            [Metric(k, v, 0, 0) for k, v in metrics],
            [Param(k, v) for k, v in params],
            [RunTag(k.replace("_", "."), v) for k, v in tags.items()],
        ),
    )


def test_load_runs_reads_each_child_and_its_curves_by_epoch():
    client = FakeClient(
        [
            stored_run(
                "a1",
                "mlp-sgd-s1",
                params=[("optimizer.lr", "0.1")],
                metrics=[("test/acc", 0.8)],
                lightsweep_config="mlp-sgd",
                stage="final",
                optimizer="sgd",
            ),
            stored_run("b2345678x", "", status="FAILED"),  # no name, no configuration: the run id's start
            stored_run(
                "c1", "c", status="FAILED", end=None, params=[("optimizer.lr", "null")], lightsweep_diverged="true"
            ),
        ],
        {
            ("a1", "epoch"): [(10, 0.0, 2000), (20, 1.0, 3000), (20, 1.0, 5000)],
            # epoch 2 (step 20) logged again on resume: the later value wins
            ("a1", "val/acc"): [(10, 0.5, 2000), (20, 0.6, 3000), (20, 0.7, 5000)],
            ("a1", "val/loss"): [(10, 1.0, 2000), (20, 0.8, 3000)],
            ("b2345678x", "train/loss_epoch"): [(0, 2.0, 1500), (1, math.nan, 2500)],  # no epoch metric: step is epoch
        },
    )
    runs, curves = load_runs(client, "parent")
    assert runs.columns.tolist() == list(RUN_COLUMNS) and curves.columns.tolist() == list(CURVE_COLUMNS)
    assert runs[["name", "label", "status", "diverged"]].values.tolist() == [
        ["mlp-sgd-s1", "mlp-sgd", "FINISHED", False],
        ["b2345678", "b2345678", "FAILED", True],  # a non-finite loss is a divergence, tagged or not
        ["c", "c", "FAILED", True],
    ]
    assert runs["seconds"].tolist()[:2] == [8.0, 8.0] and math.isnan(runs["seconds"][2])  # c has not ended
    assert runs["test_acc"].tolist()[0] == 0.8 and runs["test_acc"][1:].isna().all()
    assert runs["lr"].tolist()[0] == 0.1 and runs["lr"][1:].isna().all()
    assert runs[["optimizer", "stage"]].iloc[0].tolist() == ["sgd", "final"] and runs["stage"][1:].isna().all()
    acc = curves[curves["key"] == "val/acc"]
    assert acc[["epoch", "value", "seconds"]].values.tolist() == [[0, 0.5, 1.0], [1, 0.7, 4.0]]
    assert curves[curves["run_id"] == "b2345678x"]["epoch"].tolist() == [0, 1]


def test_load_runs_of_a_sweep_without_children():
    runs, curves = load_runs(FakeClient([], {}), "parent")
    assert runs.empty and curves.empty and runs.columns.tolist() == list(RUN_COLUMNS)
    assert summarize(run_stats(runs, curves, 0.5), 0.5).empty


# --- comparison report --------------------------------------------------------------------------
def test_summary_rows_aggregate_seeds_count_divergence_and_failures_and_rank_by_test_acc():
    curve = {0: 0.5, 1: 0.7, 2: 0.86}  # reaches 0.8 in epoch 3
    table = summary(
        child("sgd", test_acc=0.80, val_acc={0: 0.6, 1: 0.82}, val_acc_seconds={0: 4.0, 1: 8.0}, seconds=20.0),
        child("sgd", test_acc=0.84, val_acc=curve, val_acc_seconds={0: 5.0, 1: 9.0, 2: 13.0}, seconds=30.0),
        child("sgd", diverged=True, status="FAILED", seconds=4.0),
        child("adam", test_acc=0.90, val_acc=curve, seconds=12.0),
        child("adam", test_acc=0.86, val_acc={0: 0.7, 1: 0.75}, seconds=None),
        child("rmsprop", status="FAILED", seconds=None),  # crashed before testing, not diverged
        target_acc=0.8,
    )
    assert table["configuration"].tolist() == ["adam", "sgd", "rmsprop"]
    assert table.columns.tolist() == [
        "configuration",
        "runs",
        "final val acc",
        "best val acc",
        "test acc",
        "final val loss",
        "epochs to 0.8",
        "seconds to 0.8",
        "total s",
        "diverged",
        "failed",
    ]
    rows = by_config(table)
    adam, sgd, rmsprop = rows["adam"], rows["sgd"], rows["rmsprop"]

    assert sgd["runs"] == "3"
    assert sgd["test acc"] == "0.8200 ± 0.0200"  # the diverged seed is left out, not counted as 0
    assert sgd["final val acc"] == "0.8400 ± 0.0200"
    assert sgd["best val acc"] == "0.8400 ± 0.0200"
    assert sgd["final val loss"] == "–"  # none logged
    assert sgd["epochs to 0.8"] == "2.5 ± 0.5"
    assert sgd["seconds to 0.8"] == "10.5 ± 2.5"
    assert sgd["total s"] == "18.0 ± 10.7"  # every run's wall time, the diverged one included
    assert sgd["diverged"] == "yes (1/3)"
    assert sgd["failed"] == ""  # a diverged run is counted as diverged, not again as failed

    assert adam["test acc"] == "0.8800 ± 0.0200"
    assert adam["epochs to 0.8"] == "3.0 (1/2)"  # one seed of two reached the target
    assert adam["seconds to 0.8"] == "–"  # the seed that reached it has no timestamps
    assert adam["total s"] == "12.0"
    assert adam["diverged"] == "no"

    assert rmsprop["runs"] == "1"
    assert rmsprop["test acc"] == "–"
    assert rmsprop["epochs to 0.8"] == "not reached"
    assert rmsprop["failed"] == "1"
    assert rmsprop["diverged"] == "no"


def test_summary_without_failures_has_no_failed_column():
    table = summary(child("a", test_acc=0.5), child("b", test_acc=0.6, diverged=True, status="FAILED"), target_acc=0.9)
    assert "failed" not in table.columns
    assert table["configuration"].tolist() == ["a", "b"]


def test_summary_ranks_by_validation_accuracy_when_nothing_was_tested():
    table = summary(
        child("a", val_acc={0: 0.6, 1: 0.70}),
        child("b", val_acc={0: 0.5, 1: 0.90}),
        child("c", diverged=True, status="FAILED", val_acc={0: 0.99}),  # a diverged run never ranks
        child("d", val_acc={0: 0.80}),
        target_acc=0.95,
    )
    assert table["configuration"].tolist() == ["b", "d", "a", "c"]


def test_summary_of_single_seed_configurations():
    table = summary(
        child("x", test_acc=0.75, val_acc={0: 0.7}), child("y", test_acc=0.8, val_acc={0: 0.9}), target_acc=0.85
    )
    assert table["configuration"].tolist() == ["y", "x"]
    assert table["runs"].tolist() == ["1", "1"]
    assert table["test acc"].tolist() == ["0.8000", "0.7500"]  # one seed: the value, no "± 0.0000"
    assert table["best val acc"].tolist() == ["0.9000", "0.7000"]
    assert table["epochs to 0.85"].tolist() == ["1.0", "not reached"]
    assert table["total s"].tolist() == ["10.0", "10.0"]


def test_summary_when_every_run_diverged():
    table = summary(
        child("sgd", test_acc=0.1, val_acc={0: 0.2}, diverged=True, status="FAILED", seconds=3.0),
        child("sgd", diverged=True, status="FAILED", seconds=5.0),
        child("adam", diverged=True, status="FAILED", seconds=None),
        target_acc=0.5,
    )
    assert table["configuration"].tolist() == ["sgd", "adam"]  # nothing to rank by: in order
    sgd, adam = by_config(table)["sgd"], by_config(table)["adam"]
    assert sgd["diverged"] == "yes (2/2)" and adam["diverged"] == "yes (1/1)"
    assert sgd["test acc"] == sgd["final val acc"] == sgd["best val acc"] == "–"  # a diverged run's numbers never count
    assert sgd["epochs to 0.5"] == "not reached" and sgd["seconds to 0.5"] == "–"
    assert sgd["total s"] == "4.0 ± 1.0" and adam["total s"] == "–"
    assert "failed" not in table.columns
    assert markdown_table(table).splitlines()[2].startswith("| sgd | 2 | – |")


def test_summary_of_no_runs_is_an_empty_table():
    table = summary(target_acc=0.5)
    assert table.empty and "configuration" in table.columns
    assert markdown_table(table) == "(none)"


def test_runs_table_lists_each_run_with_its_outcome():
    runs, curves = tables(
        child("a", test_acc=0.8123, val_acc={0: 0.5, 1: 0.75}, seconds=12.34),
        child("b", diverged=True, status="FAILED", seconds=None),
    )
    table = runs_table(runs, curves)
    assert table.columns.tolist() == ["run", "status", "test acc", "final val acc", "seconds", "run id"]
    assert table.drop(columns="run id").values.tolist() == [
        ["a", "FINISHED", "0.8123", "0.7500", "12.3"],
        ["b", "FAILED (diverged)", "–", "–", "–"],
    ]


def test_pruned_and_killed_runs_are_listed_apart_and_not_compared():
    runs, curves = tables(
        child("a", val_acc={0: 0.9, 1: 0.95}),
        child("b", val_acc={0: 0.1}, pruned=True),
        child("a", val_acc={0: 0.2}, status="KILLED"),  # its trial ran again, as the first "a"
    )
    assert runs_table(runs, curves)["status"].tolist() == ["FINISHED", "FINISHED (pruned)", "KILLED"]
    compared = compared_runs(runs)
    assert compared["name"].tolist() == ["a"]
    table = summarize(run_stats(compared, curves, 0.5), 0.5)
    assert by_config(table)["a"]["runs"] == "1" and by_config(table)["a"]["final val acc"] == "0.9500"


def test_load_runs_reads_the_pruned_tag():
    client = FakeClient([stored_run("p1", "p", lightsweep_pruned="true"), stored_run("q1", "q")], {})
    runs, _ = load_runs(client, "parent")
    assert runs["pruned"].tolist() == [True, False]


# --- optimizer benchmark ------------------------------------------------------------------------
def final_run(opt: str, lr: str, test_acc: float | None, diverged: bool = False, seconds=(0.0, 2.0, 4.0)):
    acc = (test_acc or 0.5) - 0.01
    return child(
        opt,
        test_acc=None if diverged else test_acc,
        val_acc={e: acc for e in range(len(seconds))},
        diverged=diverged,
        status="FAILED" if diverged else "FINISHED",
        stage="final",
        lr=lr,
        val_acc_seconds=dict(enumerate(seconds)),
    )


def test_benchmark_ranks_tuned_optimizers_by_test_accuracy_with_all_diverged_last():
    runs, curves = tables(
        final_run("rmsprop", "0.1", None, diverged=True, seconds=(1.0,)),
        final_run("rmsprop", "0.1", None, diverged=True, seconds=(1.0,)),
        final_run("sgd", "0.05", 0.80),
        final_run("sgd", "0.05", 0.82),
        final_run("adam", "0.001", 0.90, seconds=(0.0, 3.0, 6.0)),
        final_run("adam", "0.001", 0.88, seconds=(0.0, 3.0, 6.0)),
    )
    tuned, grid = benchmark_sections(runs, curves)
    assert tuned.title.startswith("Tuned comparison") and tuned.text.startswith("Stage 2")
    assert tuned.table.to_dict("list") == {
        "optimizer": ["adam", "sgd", "rmsprop"],
        "best lr": ["0.001", "0.05", "0.1"],
        "test acc": ["0.8900 ± 0.0100", "0.8100 ± 0.0100", "–"],
        "final val acc": ["0.8800 ± 0.0100", "0.8000 ± 0.0100", "–"],
        "seeds": ["2", "2", "0"],
        "epoch s": ["3.00", "2.00", "–"],
        "epoch time vs sgd": ["1.50x", "1.00x", "–"],
    }
    assert tuned.figures == {}  # no stage-1 runs, no sensitivity plot
    assert grid.table.empty and markdown_table(grid.table) == "(none)"


def test_benchmark_with_one_seed_per_optimizer():
    runs, curves = tables(
        child("sgd", stage="tune", lr="0.01", val_acc={0: 0.70}),
        child("sgd", stage="tune", lr="0.1", val_acc={0: 0.75}),
        child("adam", stage="tune", lr="0.001", val_acc={0: 0.8}),
        child("adam", stage="tune", lr="1", diverged=True, status="FAILED"),
        final_run("sgd", "0.1", 0.74, seconds=(0.0,)),
        final_run("adam", "0.001", 0.81),
    )
    assert main_table_runs(runs)["run_id"].tolist() == runs["run_id"][4:].tolist()
    tuned, grid = benchmark_sections(runs, curves)
    assert tuned.table["optimizer"].tolist() == ["adam", "sgd"]
    assert tuned.table["test acc"].tolist() == ["0.8100", "0.7400"]  # one seed: the value, no "± 0.0000"
    assert tuned.table["seeds"].tolist() == ["1", "1"]
    # sgd has a single epoch, so no epoch time and nothing to compare against
    assert tuned.table["epoch s"].tolist() == ["2.00", "–"]
    assert tuned.table["epoch time vs sgd"].tolist() == ["–", "–"]
    assert grid.table.to_dict("list") == {
        "optimizer": ["sgd", "sgd", "adam", "adam"],
        "lr": ["0.01", "0.1", "0.001", "1"],
        "final val acc": ["0.7000", "0.7500", "0.8000", "diverged"],
    }
    assert list(tuned.figures) == ["lr_sensitivity"]
    assert len(tuned.figures["lr_sensitivity"].axes[0].lines) > 0


def test_benchmark_sections_are_empty_for_a_plain_sweep():
    runs, curves = tables(child("sgd", test_acc=0.8), child("adam", test_acc=0.9))
    assert benchmark_sections(runs, curves) == []
    assert main_table_runs(runs).equals(runs)
