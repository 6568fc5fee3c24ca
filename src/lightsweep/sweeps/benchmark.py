"""Report sections of the two-stage optimizer benchmark (`experiment=optimizer_benchmark`).

Runs carry the tag `stage`: `tune` (learning-rate grid, one seed, validation only) or `final`
(each optimizer's best learning rate, several seeds, tested).
"""

from __future__ import annotations

import math

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

from lightsweep.sweeps.runs import Section, format_mean_std, format_value, last_values, ranked


def is_benchmark(runs: pd.DataFrame) -> bool:
    return bool(runs["stage"].isin(["tune", "final"]).any())


def main_table_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The comparison table of a benchmark shows the tuned, tested runs; the grid has its own plot."""
    return runs[runs["stage"] == "final"] if is_benchmark(runs) else runs


def epoch_seconds(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.Series:
    """Each run's median seconds between consecutive validation points (one epoch each), aligned with `runs`."""
    points = curves[curves["key"] == "val/acc"].sort_values(["run_id", "epoch"])
    gaps = points["seconds"].groupby(points["run_id"]).diff()
    return runs["run_id"].map(gaps.groupby(points["run_id"]).median())


def plot_lr_sensitivity(tune: pd.DataFrame, chosen: pd.Series) -> Figure:
    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    colors = matplotlib.colormaps["tab10"]
    grid = tune.sort_values("lr", key=lambda lr: lr.fillna(0), kind="stable")
    for i, opt in enumerate(tune["optimizer"].unique()):
        runs = grid[grid["optimizer"] == opt]
        color = colors(i % 10)
        ax.plot(runs["lr"], runs["acc"], marker="o", markersize=4, color=color, label=opt)
        diverged = runs[runs["diverged"]]
        ax.plot(diverged["lr"], diverged["acc"], "x", markersize=8, color=color)
        best = runs[runs["lr"] == chosen.get(opt)].head(1)
        ax.plot(best["lr"], best["acc"], "*", markersize=16, color=color, markeredgecolor="k")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("final validation accuracy")
    ax.set_title("Learning-rate sensitivity (star: chosen lr, x: diverged)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def benchmark_sections(runs: pd.DataFrame, curves: pd.DataFrame) -> list[Section]:
    if not is_benchmark(runs):
        return []
    runs = runs.assign(acc=last_values(runs, curves, "val/acc"), epoch_s=epoch_seconds(runs, curves))
    tune, final = runs[runs["stage"] == "tune"], runs[runs["stage"] == "final"]
    chosen = final.groupby("optimizer", sort=False, dropna=False)["lr"].last()
    figures = (
        {"lr_sensitivity": plot_lr_sensitivity(tune.assign(acc=tune["acc"].where(~tune["diverged"], 0.0)), chosen)}
        if len(tune)
        else {}
    )

    per_opt = pd.concat([final, tune]).groupby("optimizer", dropna=False)["epoch_s"].median()
    seconds = chosen.index.to_series().map(per_opt)
    sgd = per_opt.get("sgd", math.nan)
    vs_sgd = seconds / sgd if sgd > 0 else seconds * math.nan
    by_opt = final[~final["diverged"]].groupby("optimizer", dropna=False)
    table = pd.DataFrame(
        {
            "optimizer": chosen.index,
            "best lr": chosen.map("{:g}".format),
            "test acc": by_opt["test_acc"].agg(format_mean_std),
            "final val acc": by_opt["acc"].agg(format_mean_std),
            "seeds": by_opt.size().astype(str),
            "epoch s": seconds.map(lambda s: format_value(s, 2)),
            "epoch time vs sgd": vs_sgd.map(lambda r: f"{r:.2f}x" if math.isfinite(r) else "–"),
        },
        index=chosen.index,
    ).fillna({"test acc": "–", "final val acc": "–", "seeds": "0"})
    # Ranked by the numeric mean: every seed diverged ("–") comes last.
    table = ranked(table, by_opt["test_acc"].mean().reindex(chosen.index)).reset_index(drop=True)
    grid = pd.DataFrame(
        {
            "optimizer": tune["optimizer"],
            "lr": tune["lr"].map("{:g}".format),
            "final val acc": tune["acc"].map(format_value).where(~tune["diverged"], "diverged"),
        }
    )
    return [
        Section(
            "Tuned comparison (each optimizer at its best learning rate)",
            "Stage 2: the learning rate with the best validation accuracy in stage 1, re-run with "
            "several seeds and tested once.",
            table,
            figures,
        ),
        Section("Learning-rate grid (stage 1, validation only)", "", grid.reset_index(drop=True), {}),
    ]
