"""The comparison report of a sweep, built from MLflow (the parent's children), never local files.

Data -> DataFrames -> files. `load_runs` reads the children into two tables (see `runs`); per
configuration (a run name without its seed) pandas aggregates over seeds: learning curves against
epoch with a min-max band, final/best validation and test accuracy (mean ± std), final loss, epochs
and wall seconds to a target accuracy, total time and divergence. Output: PNG plots, a Markdown file,
a self-contained HTML page (templates/report.html) and a CSV, written to a folder and logged to the
parent run.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lightsweep.sweeps.benchmark import benchmark_sections, main_table_runs
from lightsweep.sweeps.runs import (
    CURVE_COLUMNS,
    RUN_COLUMNS,
    Section,
    format_mean_std,
    format_value,
    last_values,
    markdown_table,
    ranked,
)
from lightsweep.sweeps.suite_report import is_suite, suite_sections

CURVES = ("val/loss", "val/acc", "train/loss_epoch")
LOSSES = ("val/loss", "train/loss_epoch")
SAVE = {"dpi": 100, "bbox_inches": "tight"}  # the PNGs, on disk and in MLflow
# mlflow.search_runs' columns (run.to_dictionary() flattened) -> the `runs` table's
FIELDS = {
    "info.run_id": "run_id",
    "info.run_name": "run_name",
    "info.status": "status",
    "info.start_time": "start",
    "info.end_time": "end",
    "data.tags.lightsweep.config": "config",
    "data.tags.lightsweep.diverged": "diverged_tag",
    "data.tags.lightsweep.pruned": "pruned_tag",
    "data.metrics.test/acc": "test_acc",
    "data.params.optimizer.lr": "lr",
    "data.tags.optimizer": "optimizer",
    "data.tags.stage": "stage",
}


def load_runs(client, parent_run_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The parent's children, oldest first, and their curves: the `runs` and `curves` tables of `runs.py`."""
    parent = client.get_run(parent_run_id)
    found = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        order_by=["attributes.start_time ASC"],
        max_results=10000,
    )
    # The frame mlflow.search_runs builds, but from `client`'s store (mlflow.search_runs reads the global one).
    found = (
        pd.json_normalize([run.to_dictionary() for run in found])
        .reindex(columns=list(FIELDS))
        .rename(columns=FIELDS)
        .astype({**dict.fromkeys(FIELDS.values(), "str"), "start": float, "end": float, "test_acc": float})
    )
    history = pd.DataFrame(
        [
            {**m.to_dictionary(), "run_id": run_id}
            for run_id in found["run_id"]
            for key in ("epoch", *CURVES)
            for m in client.get_metric_history(run_id, key)
        ],
        columns=["run_id", "key", "step", "value", "timestamp"],
    ).astype({"value": float})
    # A point's epoch is the `epoch` metric at its step; the last value logged for an epoch wins (a resumed run
    # may log an epoch again).
    epochs = history[history["key"] == "epoch"].drop_duplicates(["run_id", "step"], keep="last")
    curves = history[history["key"] != "epoch"].merge(
        epochs[["run_id", "step", "value"]].rename(columns={"value": "epoch"}), on=["run_id", "step"], how="left"
    )
    curves = (
        curves.assign(epoch=curves["epoch"].fillna(curves["step"]).astype(int))
        .sort_values(["timestamp", "step"], kind="stable")
        .drop_duplicates(["run_id", "key", "epoch"], keep="last")
    )
    curves["seconds"] = (curves["timestamp"] - curves["run_id"].map(found.set_index("run_id")["start"])) / 1000
    unfinite = curves[curves["key"].isin(LOSSES) & ~np.isfinite(curves["value"])]["run_id"]
    name = found["run_name"].where(found["run_name"].fillna("") != "", found["run_id"].str[:8])
    runs = found.assign(
        name=name,
        label=found["config"].fillna(name),
        lr=pd.to_numeric(found["lr"].mask(found["lr"] == "null")),
        diverged=(found["diverged_tag"] == "true") | found["run_id"].isin(unfinite),
        pruned=found["pruned_tag"] == "true",
        seconds=((found["end"] - found["start"]) / 1000).where(found["end"] > 0),
    )
    runs = runs[list(RUN_COLUMNS)].astype({"diverged": bool, "pruned": bool, "seconds": float, "lr": float})
    return runs.reset_index(drop=True), curves[list(CURVE_COLUMNS)].reset_index(drop=True)


def run_stats(runs: pd.DataFrame, curves: pd.DataFrame, target_acc: float) -> pd.DataFrame:
    """One row per run: its label, numbers (NaN where a run diverged: it never counts), wall seconds, outcome."""
    acc = curves[curves["key"] == "val/acc"].sort_values("epoch", kind="stable")
    first_hit = acc[acc["value"] >= target_acc].drop_duplicates("run_id").set_index("run_id")
    numbers = (
        pd.DataFrame(
            {
                "final val acc": last_values(runs, curves, "val/acc"),
                "best val acc": runs["run_id"].map(acc.groupby("run_id")["value"].max()),
                "test acc": runs["test_acc"],
                "final val loss": last_values(runs, curves, "val/loss"),
                "epochs to": runs["run_id"].map(first_hit["epoch"] + 1),
                "seconds to": runs["run_id"].map(first_hit["seconds"]),
            },
            dtype=float,
        )
        .replace([np.inf, -np.inf], np.nan)
        .where(~runs["diverged"])
    )
    return numbers.assign(
        label=runs["label"],
        seconds=runs["seconds"],
        diverged=runs["diverged"],
        failed=(runs["status"] == "FAILED") & ~runs["diverged"],
    )


def summarize(stats: pd.DataFrame, target_acc: float) -> pd.DataFrame:
    """The comparison table: one row per configuration, ranked by mean test accuracy (validation accuracy for
    sweeps that do not test, e.g. a search); configurations without one (diverged, failed) last."""
    by = stats.groupby("label", sort=False)
    n, n_div, n_failed, hits = by.size(), by["diverged"].sum(), by["failed"].sum(), by["epochs to"].count()

    def cells(column: str, digits: int = 4) -> pd.Series:
        return by[column].agg(format_mean_std, digits).astype(str)  # (str also when there are no runs)

    def of(part: pd.Series, whole: pd.Series) -> pd.Series:
        return " (" + part.astype(str) + "/" + whole.astype(str) + ")"

    table = pd.DataFrame(
        {
            "configuration": n.index,
            "runs": n.astype(str),
            "final val acc": cells("final val acc"),
            "best val acc": cells("best val acc"),
            "test acc": cells("test acc"),
            "final val loss": cells("final val loss"),
            f"epochs to {target_acc:g}": (
                cells("epochs to", 1) + of(hits, n - n_div).where(hits < n - n_div, "")
            ).where(hits > 0, "not reached"),
            f"seconds to {target_acc:g}": cells("seconds to", 1).where(hits > 0, "–"),
            "total s": cells("seconds", 1),
            "diverged": ("yes" + of(n_div, n)).where(n_div > 0, "no"),
            "failed": n_failed.astype(str).where(n_failed > 0, ""),
        },
        index=n.index,
    )
    if not n_failed.any():
        table = table.drop(columns="failed")
    score = by["test acc" if stats["test acc"].notna().any() else "final val acc"].mean()
    return ranked(table, score).reset_index(drop=True)


def compared_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs the comparison ranks: not those a search's pruner stopped early, nor those killed with
    their sweep (a continued study runs their trials again); the Runs table lists every run."""
    return runs[~runs["pruned"] & (runs["status"] != "KILLED")]


def runs_table(runs: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "run": runs["name"],
            "status": runs["status"]
            + runs["diverged"].map({True: " (diverged)", False: ""})
            + runs["pruned"].map({True: " (pruned)", False: ""}),
            "test acc": runs["test_acc"].map(format_value),
            "final val acc": last_values(runs, curves, "val/acc").map(format_value),
            "seconds": runs["seconds"].map(lambda s: format_value(s, 1) if s else "–"),
            "run id": runs["run_id"],
        }
    )


# --- plots --------------------------------------------------------------------------------------
def plot_curves(runs: pd.DataFrame, curves: pd.DataFrame, order: pd.Series) -> Figure:
    """Each configuration's mean curve over its seeds (not diverged), in `order`, with a min-max band."""
    points = curves[np.isfinite(curves["value"])].merge(runs.loc[~runs["diverged"], ["run_id", "label"]], on="run_id")
    points["label"] = pd.Categorical(points["label"], categories=list(order))
    band = points.groupby(["label", "key", "epoch"], observed=True)["value"].agg(["mean", "min", "max"])
    fig = Figure(figsize=(17, 4.8))
    axes = fig.subplots(1, 3)
    colors = matplotlib.colormaps["tab20" if len(order) > 10 else "tab10"]
    for (label, key), line in band.groupby(level=["label", "key"], observed=True):
        ax, color = axes[CURVES.index(key)], colors(list(order).index(label) % colors.N)
        x = line.index.get_level_values("epoch") + 1
        ax.plot(x, line["mean"], color=color, label=label, linewidth=1.5, marker="o", markersize=2.5)
        ax.fill_between(x, line["min"], line["max"], color=color, alpha=0.15)
    titles = {"val/loss": "validation loss", "val/acc": "validation accuracy", "train/loss_epoch": "training loss"}
    for ax, key in zip(axes, CURVES):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{titles[key]} (mean, band: min–max over seeds)")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if key.endswith("loss"):
            ax.set_yscale("log")
    if axes[-1].get_legend_handles_labels()[0]:
        axes[-1].legend(fontsize=7, loc="upper right", ncol=1 + len(order) // 12)
    return fig


def plot_test_accuracy(stats: pd.DataFrame, order: pd.Series) -> Figure:
    acc = stats.groupby("label")["test acc"]
    tested = pd.DataFrame({"mean": acc.mean(), "std": acc.std(ddof=0).fillna(0.0), "n": acc.count()}).reindex(order)
    tested = tested[tested["n"] > 0]
    fig = Figure(figsize=(8, 0.45 * max(len(tested), 2) + 1.2))
    ax = fig.subplots()
    y = list(range(len(tested)))[::-1]
    ax.barh(y, tested["mean"], xerr=tested["std"], color="#4c72b0", alpha=0.85, capsize=3)
    for yi, mean in zip(y, tested["mean"]):
        ax.text(mean, yi, f" {mean:.4f}", va="center", fontsize=8)
    ax.set_yticks(y, tested.index, fontsize=8)
    if len(tested):
        ax.set_xlim(max(0.0, (tested["mean"] - tested["std"]).min() - 0.05), min(1.0, tested["mean"].max() + 0.05))
    ax.set_xlabel("test accuracy (mean ± std over seeds)")
    ax.set_title("Ranked test accuracy")
    ax.grid(axis="x", alpha=0.3)
    return fig


# --- documents ----------------------------------------------------------------------------------
@dataclass
class Report:
    folder: Path
    documents: list[Path]  # report.md, report.html, summary.csv
    figures: dict[str, Figure]  # also saved as `folder / f"{name}.png"`
    table: str
    n_runs: int
    n_failed: int  # failed jobs, those that failed before their run existed included
    n_diverged: int
    n_jobs: int  # runs, and the jobs that failed before their run existed
    n_pruned: int = 0


def write_report(client, parent_run_id: str, folder: Path, target_acc: float = 0.85, extra_sections=None) -> Report:
    """Build every report file into `folder`; `extra_sections(runs, curves)` may add `Section`s."""
    from lightsweep.sweeps.failures import logged

    folder.mkdir(parents=True, exist_ok=True)
    parent = client.get_run(parent_run_id)
    runs, curves = load_runs(client, parent_run_id)
    no_run = pd.DataFrame(
        [(f.job, f.overrides, " ".join(f.reason.split())) for f in logged(client, parent_run_id) if f.run_id is None],
        columns=["job", "overrides", "reason"],
    )
    # an optimizer suite's runs are compared by its own sections (time to target), not configuration by configuration
    suite = is_suite(runs)
    main = main_table_runs(compared_runs(runs)) if not suite else runs.iloc[:0]
    stats = run_stats(main, curves, target_acc)
    summary = summarize(stats, target_acc)
    order = summary["configuration"]
    plots = (
        {"learning_curves": plot_curves(main, curves, order), "test_accuracy": plot_test_accuracy(stats, order)}
        if len(summary)
        else {}
    )
    comparison = Section(
        "Comparison (ranked by test accuracy, or validation accuracy without a test)", "", summary, plots
    )
    sections = [
        *([comparison] if not suite else []),
        *(extra_sections(runs, curves) if extra_sections else []),
        Section("Runs", "", runs_table(runs, curves), {}),
        *([Section("Jobs that failed before their run existed", "", no_run, {})] if len(no_run) else []),
    ]
    figures = {name: fig for section in sections for name, fig in section.figures.items()}
    for name, fig in figures.items():
        fig.savefig(folder / f"{name}.png", **SAVE)

    n_failed, n_diverged = int((runs["status"] == "FAILED").sum()) + len(no_run), int(runs["diverged"].sum())
    n_pruned, n_killed = int(runs["pruned"].sum()), int((runs["status"] == "KILLED").sum())
    title = f"Sweep report: {parent.info.run_name}"
    end = parent.info.end_time or time.time() * 1000
    before = f", {len(no_run)} before their run existed" if len(no_run) else ""
    intro = (
        f"{len(runs) + len(no_run)} jobs, {n_failed} failed ({n_diverged} diverged{before}); sweep wall time "
        f"{(end - parent.info.start_time) / 1000:.0f} s. Parent run `{parent_run_id}`. "
        + (
            f"Target accuracy for 'epochs/seconds to': {target_acc:g} (validation)."
            if not suite
            else f"An optimizer suite: timing runs and trials; {n_pruned} trial{'s' if n_pruned != 1 else ''} pruned "
            "(they could no longer be their study's fastest)."
        )
    )
    if (n_pruned or n_killed) and not suite:
        apart = [f"{n_pruned} pruned (stopped early by the search's pruner)"] if n_pruned else []
        apart += [f"{n_killed} killed (their sweep stopped while they ran)"] if n_killed else []
        intro += f" {'; '.join(apart)}: listed under Runs, not compared."
    vectorized = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' and tags.`lightsweep.vectorized` LIKE '%'",
        max_results=1,
    )
    if vectorized:
        intro += (
            " Runs tagged `lightsweep.vectorized` trained together as one batched model: their seconds are"
            " their group's wall time, not what each would take alone."
        )
    md = [f"# {title}", "", intro]
    for section in sections:
        md += [
            "",
            f"## {section.title}",
            "",
            *([section.text, ""] if section.text else []),
            markdown_table(section.table),
        ]
        md += ["", *(f"![{name}]({name}.png)" for name in section.figures)] if section.figures else []
    (folder / "report.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    summary.to_csv(folder / "summary.csv", index=False, lineterminator="\r\n")  # CSV's own line ends (RFC 4180)
    images = {name: base64.b64encode((folder / f"{name}.png").read_bytes()).decode() for name in figures}
    page = Environment(loader=PackageLoader("lightsweep.sweeps"), autoescape=select_autoescape()).get_template(
        "report.html"
    )
    (folder / "report.html").write_text(
        page.render(title=title, intro=intro, sections=sections, images=images), encoding="utf-8"
    )
    shown = sections[0].table if suite and sections and sections[0].title.startswith("Optimizer suite") else summary
    table = markdown_table(shown) if len(shown) else "(no runs)"
    documents = [
        folder / "report.md",
        folder / "report.html",
        folder / "summary.csv",
        *sorted(folder.glob("suite_*.csv")),
    ]
    return Report(folder, documents, figures, table, len(runs), n_failed, n_diverged, len(runs) + len(no_run), n_pruned)


def find_sweep(client, sweep: str, experiment_name: str | None = None) -> str:
    """A sweep's parent run id: given as is (it must exist), or `latest` (the newest parent run)."""
    from mlflow.exceptions import MlflowException

    from lightsweep.errors import LightsweepError

    if sweep != "latest":
        try:
            return client.get_run(sweep).info.run_id
        except MlflowException:
            raise LightsweepError(
                f"sweep={sweep}: no such MLflow run in this store: pass a sweep's parent run id from the UI, "
                "or sweep=latest"
            ) from None
    return newest_run(
        client,
        experiment_name,
        "tags.`lightsweep.role` = 'sweep'",
        "no sweep found in this store: run `python train.py -m ...` first, or pass sweep=<parent run id>",
    )


def newest_run(client, experiment_name: str | None, filter_string: str, none_found: str) -> str:
    """The newest run matching `filter_string` in the experiment (or any), else `none_found` in one line."""
    from lightsweep.errors import LightsweepError

    if experiment_name:
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            raise LightsweepError(f"no MLflow experiment named {experiment_name!r}: check experiment_name")
        experiments = [experiment]
    else:
        experiments = client.search_experiments()
    runs = client.search_runs(
        [e.experiment_id for e in experiments],
        filter_string=filter_string,
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise LightsweepError(none_found)
    return runs[0].info.run_id


def publish_report(client, parent_run_id: str, folder: Path, target_acc: float) -> Report:
    """Write the report to `folder`, log it to the parent run under `report/`, print the table."""

    def extra_sections(runs: pd.DataFrame, curves: pd.DataFrame) -> list[Section]:
        suite = suite_sections(client, parent_run_id, folder) if is_suite(runs) else []
        return [*benchmark_sections(runs, curves), *suite]

    report = write_report(client, parent_run_id, folder, target_acc, extra_sections=extra_sections)
    for path in report.documents:
        client.log_artifact(parent_run_id, str(path), "report")
    for name, fig in report.figures.items():
        client.log_figure(parent_run_id, fig, f"report/{name}.png", save_kwargs=SAVE)
    print(f"\n{report.table}\n")
    print(
        f"{report.n_jobs} jobs, {report.n_failed} failed ({report.n_diverged} diverged)"
        f"{f', {report.n_pruned} pruned' if report.n_pruned else ''}. "
        f"Report: {report.folder / 'report.html'}"
    )
    return report
