"""Report sections of the two-stage optimizer benchmark (`experiment=optimizer_benchmark`).

Runs carry the tag `stage`: `tune` (learning-rate grid, one seed, validation only) or `final`
(each optimizer's best learning rate, several seeds, tested).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from lightsweep.plots import pyplot, save_figure
from lightsweep.sweeps.runs import ChildRun, descending, format_mean_std, markdown_table, mean_std


def is_benchmark(children: list[ChildRun]) -> bool:
    return any(c.tags.get("stage") in ("tune", "final") for c in children)


def main_table_runs(children: list[ChildRun]) -> list[ChildRun]:
    """The comparison table of a benchmark shows the tuned, tested runs; the grid has its own plot."""
    return [c for c in children if c.tags.get("stage") == "final"] if is_benchmark(children) else children


def epoch_seconds(run: ChildRun) -> float:
    """Median seconds between consecutive validation points (one epoch each)."""
    times = [run.val_acc_seconds[e] for e in sorted(run.val_acc_seconds)]
    gaps = [b - a for a, b in zip(times, times[1:])]
    return statistics.median(gaps) if gaps else math.nan


def plot_lr_sensitivity(tune: list[ChildRun], chosen: dict[str, float], path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    optimizers = list(dict.fromkeys(c.tags.get("optimizer", "?") for c in tune))
    colors = plt.get_cmap("tab10")
    for i, opt in enumerate(optimizers):
        runs = sorted((c for c in tune if c.tags.get("optimizer") == opt), key=lambda c: c.lr or 0)
        lrs = [c.lr for c in runs]
        accs = [0.0 if c.diverged else c.final("val/acc") for c in runs]
        color = colors(i % 10)
        ax.plot(lrs, accs, marker="o", markersize=4, color=color, label=opt)
        for c, acc in zip(runs, accs):
            if c.diverged:
                ax.plot(c.lr, acc, marker="x", markersize=8, color=color)
        if opt in chosen:
            best = next((a for c, a in zip(runs, accs) if c.lr == chosen[opt]), None)
            if best is not None:
                ax.plot(chosen[opt], best, marker="*", markersize=16, color=color, markeredgecolor="k")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("final validation accuracy")
    ax.set_title("Learning-rate sensitivity (star: chosen lr, x: diverged)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=100)


def benchmark_sections(children: list[ChildRun], folder: Path):
    if not is_benchmark(children):
        return []
    tune = [c for c in children if c.tags.get("stage") == "tune"]
    final = [c for c in children if c.tags.get("stage") == "final"]
    chosen = {c.tags.get("optimizer"): c.lr for c in final}
    images = [plot_lr_sensitivity(tune, chosen, folder / "lr_sensitivity.png")] if tune else []

    per_opt = {}
    for opt in dict.fromkeys(c.tags.get("optimizer") for c in [*final, *tune]):
        runs = [c for c in [*tune, *final] if c.tags.get("optimizer") == opt]
        per_opt[opt] = statistics.median([t for t in (epoch_seconds(r) for r in runs) if math.isfinite(t)] or [math.nan])
    sgd = per_opt.get("sgd", math.nan)
    ranked = []
    for opt, lr in chosen.items():
        runs = [c for c in final if c.tags.get("optimizer") == opt and not c.diverged]
        test_accs = [r.metrics.get("test/acc") for r in runs]
        seconds = per_opt[opt]
        row = {
            "optimizer": opt,
            "best lr": f"{lr:g}",
            "test acc": format_mean_std(test_accs),
            "final val acc": format_mean_std([r.final("val/acc") for r in runs]),
            "seeds": str(len(runs)),
            "epoch s": f"{seconds:.2f}" if math.isfinite(seconds) else "–",
            "epoch time vs sgd": f"{seconds / sgd:.2f}x" if sgd > 0 and math.isfinite(seconds / sgd) else "–",
        }
        ranked.append((mean_std(test_accs)[0], row))
    # Rank by the numeric mean: the formatted cell sorts "–" (every seed diverged) above any number.
    ranked.sort(key=lambda pair: descending(pair[0]))
    rows = [row for _, row in ranked]
    grid_rows = [{"optimizer": c.tags.get("optimizer"), "lr": f"{c.lr:g}",
                  "final val acc": "diverged" if c.diverged else f"{c.final('val/acc'):.4f}"} for c in tune]
    return [
        ("Tuned comparison (each optimizer at its best learning rate)",
         "Stage 2: the learning rate with the best validation accuracy in stage 1, re-run with "
         "several seeds and tested once.\n\n" + markdown_table(rows), images),
        ("Learning-rate grid (stage 1, validation only)", markdown_table(grid_rows) if grid_rows else "(none)", []),
    ]
