"""The report's numbers and rankings from hand-made child runs: no MLflow store, no training."""

from __future__ import annotations

import ast
import itertools
import math
from pathlib import Path

import pytest

from lightsweep.sweeps.benchmark import benchmark_sections, main_table_runs
from lightsweep.sweeps.report import ChildRun, summarize
from lightsweep.sweeps.runs import descending, format_mean_std, markdown_table, mean_std

_ids = itertools.count()
SWEEPS = Path(__file__).resolve().parents[2] / "src" / "lightsweep" / "sweeps"


def child(label: str, *, test_acc: float | None = None, val_acc: dict[int, float] | None = None,
          diverged: bool = False, status: str = "FINISHED", seconds: float | None = 10.0,
          val_acc_seconds: dict[int, float] | None = None, **tags: str) -> ChildRun:
    """A run shaped like `load_children` builds it: every curve key present, possibly empty."""
    lr = tags.pop("lr", None)
    return ChildRun(
        run_id=f"run-{next(_ids)}", name=label, label=label, status=status, diverged=diverged,
        seconds=seconds, tags={"optimizer": label, **tags}, params={"optimizer.lr": lr} if lr else {},
        metrics={"test/acc": test_acc} if test_acc is not None else {},
        curves={"val/loss": {}, "val/acc": dict(val_acc or {}), "train/loss_epoch": {}},
        val_acc_seconds=dict(val_acc_seconds or {}),
    )


def table_rows(markdown: str) -> list[dict[str, str]]:
    """The rows of the first Markdown table in `markdown`, as column -> cell."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    header, body = cells[0], cells[2:]
    return [dict(zip(header, row)) for row in body]


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


def test_descending_puts_non_finite_values_last():
    values = [0.5, math.nan, 0.9, math.inf, 0.7]
    assert sorted(values, key=descending)[:3] == [0.9, 0.7, 0.5]


def test_markdown_table_takes_the_union_of_columns():
    assert markdown_table([{"a": "1"}, {"a": "2", "b": "x"}]) == "| a | b |\n|---|---|\n| 1 |  |\n| 2 | x |"


def test_benchmark_and_runs_do_not_import_report():
    # The report imports the benchmark sections; an import back would make a cycle again.
    for module in ("benchmark.py", "runs.py"):
        tree = ast.parse((SWEEPS / module).read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert "lightsweep.sweeps.report" not in imported, module


# --- comparison report --------------------------------------------------------------------------
def test_summary_rows_aggregate_seeds_count_divergence_and_failures_and_rank_by_test_acc():
    curve = {0: 0.5, 1: 0.7, 2: 0.86}  # reaches 0.8 in epoch 3
    children = [
        child("sgd", test_acc=0.80, val_acc={0: 0.6, 1: 0.82}, val_acc_seconds={0: 4.0, 1: 8.0}, seconds=20.0),
        child("sgd", test_acc=0.84, val_acc=curve, val_acc_seconds={0: 5.0, 1: 9.0, 2: 13.0}, seconds=30.0),
        child("sgd", diverged=True, status="FAILED", seconds=4.0),
        child("adam", test_acc=0.90, val_acc=curve, seconds=12.0),
        child("adam", test_acc=0.86, val_acc={0: 0.7, 1: 0.75}, seconds=None),
        child("rmsprop", status="FAILED", seconds=None),  # crashed before testing, not diverged
    ]
    summaries = summarize(children, target_acc=0.8)
    assert [s.label for s in summaries] == ["adam", "sgd", "rmsprop"]
    adam, sgd, rmsprop = (s.row() for s in summaries)

    assert sgd["runs"] == "3"
    assert sgd["test acc"] == "0.8200 ± 0.0200"  # the diverged seed is left out, not counted as 0
    assert sgd["final val acc"] == "0.8400 ± 0.0200"
    assert sgd["best val acc"] == "0.8400 ± 0.0200"
    assert sgd["epochs to 0.8"] == "2.5 ± 0.5"
    assert sgd["seconds to 0.8"] == "10.5 ± 2.5"
    assert sgd["total s"] == "18.0 ± 10.7"  # every run's wall time, the diverged one included
    assert sgd["diverged"] == "yes (1/3)"
    assert "failed" not in sgd  # a diverged run is counted as diverged, not again as failed

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


def test_summary_ranks_by_validation_accuracy_when_nothing_was_tested():
    children = [
        child("a", val_acc={0: 0.6, 1: 0.70}),
        child("b", val_acc={0: 0.5, 1: 0.90}),
        child("c", diverged=True, status="FAILED", val_acc={0: 0.99}),  # a diverged run never ranks
        child("d", val_acc={0: 0.80}),
    ]
    assert [s.label for s in summarize(children, target_acc=0.95)] == ["b", "d", "a", "c"]


def test_summary_of_single_seed_configurations():
    summaries = summarize([child("x", test_acc=0.75, val_acc={0: 0.7}), child("y", test_acc=0.8, val_acc={0: 0.9})], 0.85)
    rows = [s.row() for s in summaries]
    assert [r["configuration"] for r in rows] == ["y", "x"]
    assert [r["test acc"] for r in rows] == ["0.8000", "0.7500"]
    assert [r["epochs to 0.85"] for r in rows] == ["1.0", "not reached"]
    assert summaries[0].test_acc == (0.8, 0.0, 1)


# --- optimizer benchmark ------------------------------------------------------------------------
def final_run(opt: str, lr: str, test_acc: float | None, diverged: bool = False, seconds=(0.0, 2.0, 4.0)) -> ChildRun:
    return child(opt, test_acc=None if diverged else test_acc, val_acc={0: (test_acc or 0.5) - 0.01},
                diverged=diverged, status="FAILED" if diverged else "FINISHED", stage="final", lr=lr,
                val_acc_seconds=dict(enumerate(seconds)))


def test_benchmark_ranks_tuned_optimizers_by_test_accuracy_with_all_diverged_last(tmp_path):
    children = [
        final_run("rmsprop", "0.1", None, diverged=True, seconds=(1.0,)),
        final_run("rmsprop", "0.1", None, diverged=True, seconds=(1.0,)),
        final_run("sgd", "0.05", 0.80),
        final_run("sgd", "0.05", 0.82),
        final_run("adam", "0.001", 0.90, seconds=(0.0, 3.0, 6.0)),
        final_run("adam", "0.001", 0.88, seconds=(0.0, 3.0, 6.0)),
    ]
    (title, text, images), _grid = benchmark_sections(children, tmp_path)
    rows = table_rows(text)
    assert [r["optimizer"] for r in rows] == ["adam", "sgd", "rmsprop"]
    assert [r["test acc"] for r in rows] == ["0.8900 ± 0.0100", "0.8100 ± 0.0100", "–"]
    assert [r["best lr"] for r in rows] == ["0.001", "0.05", "0.1"]
    assert [r["seeds"] for r in rows] == ["2", "2", "0"]
    assert [r["epoch s"] for r in rows] == ["3.00", "2.00", "–"]
    assert [r["epoch time vs sgd"] for r in rows] == ["1.50x", "1.00x", "–"]
    assert images == []  # no stage-1 runs, no sensitivity plot


def test_benchmark_with_one_seed_per_optimizer(tmp_path):
    children = [
        child("sgd", stage="tune", lr="0.01", val_acc={0: 0.70}),
        child("sgd", stage="tune", lr="0.1", val_acc={0: 0.75}),
        child("adam", stage="tune", lr="0.001", val_acc={0: 0.8}),
        child("adam", stage="tune", lr="1", diverged=True, status="FAILED"),
        final_run("sgd", "0.1", 0.74, seconds=(0.0,)),
        final_run("adam", "0.001", 0.81),
    ]
    assert main_table_runs(children) == children[4:]
    (_, text, images), (_, grid, _) = benchmark_sections(children, tmp_path)
    rows = table_rows(text)
    assert [r["optimizer"] for r in rows] == ["adam", "sgd"]
    assert [r["test acc"] for r in rows] == ["0.8100", "0.7400"]  # one seed: the value, no "± 0.0000"
    assert [r["seeds"] for r in rows] == ["1", "1"]
    # sgd has a single epoch, so no epoch time and nothing to compare against
    assert [r["epoch s"] for r in rows] == ["2.00", "–"]
    assert [r["epoch time vs sgd"] for r in rows] == ["–", "–"]
    assert [r["final val acc"] for r in table_rows(grid)] == ["0.7000", "0.7500", "0.8000", "diverged"]
    assert [p.name for p in images] == ["lr_sensitivity.png"] and images[0].is_file()


def test_benchmark_sections_are_empty_for_a_plain_sweep(tmp_path):
    children = [child("sgd", test_acc=0.8), child("adam", test_acc=0.9)]
    assert benchmark_sections(children, tmp_path) == []
    assert main_table_runs(children) == children
