"""The comparison report of a sweep, built from MLflow (the parent's children), never local files.

Per configuration (a run name without its seed) it aggregates over seeds: learning curves against
epoch with a min-max band, final/best validation and test accuracy (mean ± std), final loss, epochs
and wall seconds to a target accuracy, total time and divergence. Output: PNG plots, a Markdown file,
a self-contained HTML page and a CSV, written to a folder and logged to the parent run.
"""

from __future__ import annotations

import base64
import csv
import html
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from lightsweep.plots import pyplot, save_figure
from lightsweep.sweeps.benchmark import benchmark_sections, main_table_runs
# ChildRun and markdown_table are part of this module's interface too (re-exported from `runs`).
from lightsweep.sweeps.runs import ChildRun, descending, format_mean_std, markdown_table, mean_std

CURVES = ("val/loss", "val/acc", "train/loss_epoch")


def _by_epoch(history, epoch_at_step: dict[int, int]) -> tuple[dict[int, float], dict[int, int]]:
    """Values per epoch; the last value wins (a resumed run may log an epoch again)."""
    values, stamps = {}, {}
    for metric in sorted(history, key=lambda m: (m.timestamp, m.step)):
        epoch = epoch_at_step.get(metric.step, metric.step)
        values[epoch], stamps[epoch] = metric.value, metric.timestamp
    return values, stamps


def load_children(client, parent_run_id: str) -> list[ChildRun]:
    parent = client.get_run(parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        order_by=["attributes.start_time ASC"],
        max_results=10000,
    )
    children = []
    for run in runs:
        run_id = run.info.run_id
        epoch_at_step = {m.step: int(m.value) for m in client.get_metric_history(run_id, "epoch")}
        curves, val_acc_seconds = {}, {}
        for key in CURVES:
            curves[key], stamps = _by_epoch(client.get_metric_history(run_id, key), epoch_at_step)
            if key == "val/acc":
                val_acc_seconds = {e: (t - run.info.start_time) / 1000 for e, t in stamps.items()}
        end = run.info.end_time
        losses = [v for key in ("val/loss", "train/loss_epoch") for v in curves[key].values()]
        diverged = run.data.tags.get("lightsweep.diverged") == "true" or any(not math.isfinite(v) for v in losses)
        name = run.info.run_name or run_id[:8]
        children.append(ChildRun(
            run_id=run_id, name=name, label=run.data.tags.get("lightsweep.config", name),
            status=run.info.status, diverged=diverged,
            seconds=(end - run.info.start_time) / 1000 if end else None,
            tags=run.data.tags, params=run.data.params, metrics=run.data.metrics,
            curves=curves, val_acc_seconds=val_acc_seconds,
        ))
    return children


@dataclass
class ConfigSummary:
    label: str
    runs: list[ChildRun]
    target_acc: float

    @property
    def test_acc(self):
        return mean_std([r.metrics.get("test/acc") for r in self.runs if not r.diverged])

    def score(self, by_test: bool) -> float:
        if by_test:
            return self.test_acc[0]
        return mean_std([r.final("val/acc") for r in self.runs if not r.diverged])[0]

    def _to_target(self, run: ChildRun) -> tuple[int | None, float | None]:
        for epoch in sorted(run.curves["val/acc"]):
            if run.curves["val/acc"][epoch] >= self.target_acc:
                return epoch + 1, run.val_acc_seconds.get(epoch)
        return None, None

    def row(self) -> dict[str, str]:
        runs = self.runs
        ok = [r for r in runs if not r.diverged]
        reached = [self._to_target(r) for r in ok]
        hits = [x for x in reached if x[0] is not None]
        n_div = sum(r.diverged for r in runs)
        n_failed = sum(r.status == "FAILED" and not r.diverged for r in runs)
        return {
            "configuration": self.label,
            "runs": str(len(runs)),
            "final val acc": format_mean_std([r.final("val/acc") for r in ok]),
            "best val acc": format_mean_std([max(r.curves["val/acc"].values(), default=math.nan) for r in ok]),
            "test acc": format_mean_std([r.metrics.get("test/acc") for r in ok]),
            "final val loss": format_mean_std([r.final("val/loss") for r in ok]),
            f"epochs to {self.target_acc:g}": (format_mean_std([h[0] for h in hits], 1) + (f" ({len(hits)}/{len(ok)})" if len(hits) < len(ok) else "")) if hits else "not reached",
            f"seconds to {self.target_acc:g}": format_mean_std([h[1] for h in hits], 1) if hits else "–",
            "total s": format_mean_std([r.seconds for r in runs], 1),
            "diverged": f"yes ({n_div}/{len(runs)})" if n_div else "no",
            **({"failed": str(n_failed)} if n_failed else {}),
        }


def summarize(children: list[ChildRun], target_acc: float) -> list[ConfigSummary]:
    groups: dict[str, list[ChildRun]] = {}
    for child in children:
        groups.setdefault(child.label, []).append(child)
    summaries = [ConfigSummary(label, runs, target_acc) for label, runs in groups.items()]
    # Ranked by mean test accuracy (validation accuracy for sweeps that do not test, e.g. a search);
    # configurations without one (diverged, failed) last.
    by_test = any(s.test_acc[2] for s in summaries)
    return sorted(summaries, key=lambda s: descending(s.score(by_test)))


# --- plots --------------------------------------------------------------------------------------
def plot_curves(summaries: list[ConfigSummary], path: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    titles = {"val/loss": "validation loss", "val/acc": "validation accuracy", "train/loss_epoch": "training loss"}
    colors = plt.get_cmap("tab20" if len(summaries) > 10 else "tab10")
    for i, summary in enumerate(summaries):
        color = colors(i % colors.N)
        for ax, key in zip(axes, CURVES):
            epochs = sorted({e for r in summary.runs if not r.diverged for e in r.curves[key]})
            points = [[r.curves[key][e] for r in summary.runs if not r.diverged and e in r.curves[key]] for e in epochs]
            points = [[v for v in p if math.isfinite(v)] for p in points]
            keep = [(e, p) for e, p in zip(epochs, points) if p]
            if not keep:
                continue
            x = [e + 1 for e, _ in keep]
            ax.plot(x, [statistics.fmean(p) for _, p in keep], color=color, label=summary.label, linewidth=1.5,
                    marker="o", markersize=2.5)
            ax.fill_between(x, [min(p) for _, p in keep], [max(p) for _, p in keep], color=color, alpha=0.15)
    from matplotlib.ticker import MaxNLocator

    for ax, key in zip(axes, CURVES):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{titles[key]} (mean, band: min–max over seeds)")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if key.endswith("loss"):
            ax.set_yscale("log")
    if axes[-1].get_legend_handles_labels()[0]:
        axes[-1].legend(fontsize=7, loc="upper right", ncol=1 + len(summaries) // 12)
    return save_figure(fig, path, dpi=100)


def plot_test_accuracy(summaries: list[ConfigSummary], path: Path) -> Path:
    plt = pyplot()
    ranked = [s for s in summaries if s.test_acc[2]]
    fig, ax = plt.subplots(figsize=(8, 0.45 * max(len(ranked), 2) + 1.2))
    means = [s.test_acc[0] for s in ranked]
    stds = [s.test_acc[1] for s in ranked]
    y = list(range(len(ranked)))[::-1]
    ax.barh(y, means, xerr=stds, color="#4c72b0", alpha=0.85, capsize=3)
    for yi, mean in zip(y, means):
        ax.text(mean, yi, f" {mean:.4f}", va="center", fontsize=8)
    ax.set_yticks(y, [s.label for s in ranked], fontsize=8)
    if means:
        low = min(m - s for m, s in zip(means, stds))
        ax.set_xlim(max(0.0, low - 0.05), min(1.0, max(means) + 0.05))
    ax.set_xlabel("test accuracy (mean ± std over seeds)")
    ax.set_title("Ranked test accuracy")
    ax.grid(axis="x", alpha=0.3)
    return save_figure(fig, path, dpi=100)


# --- documents ----------------------------------------------------------------------------------
@dataclass
class Report:
    folder: Path
    files: list[Path]
    table: str
    n_runs: int
    n_failed: int
    n_diverged: int


def write_report(client, parent_run_id: str, folder: Path, target_acc: float = 0.85,
                 extra_sections=None) -> Report:
    """Build every report file into `folder`; `extra_sections(children, folder)` may add (title, markdown, images)."""
    folder.mkdir(parents=True, exist_ok=True)
    parent = client.get_run(parent_run_id)
    children = load_children(client, parent_run_id)
    summaries = summarize(main_table_runs(children), target_acc)
    rows = [s.row() for s in summaries]
    table = markdown_table(rows) if rows else "(no runs)"
    images = []
    if summaries:
        images = [plot_curves(summaries, folder / "learning_curves.png"),
                  plot_test_accuracy(summaries, folder / "test_accuracy.png")]
    sections = list(extra_sections(children, folder)) if extra_sections else []

    n_failed = sum(c.status == "FAILED" for c in children)
    n_diverged = sum(c.diverged for c in children)
    title = f"Sweep report: {parent.info.run_name}"
    end = parent.info.end_time or time.time() * 1000
    intro = (f"{len(children)} runs, {n_failed} failed ({n_diverged} diverged); sweep wall time "
             f"{(end - parent.info.start_time) / 1000:.0f} s. Parent run `{parent_run_id}`. "
             f"Target accuracy for 'epochs/seconds to': {target_acc:g} (validation).")
    md = [f"# {title}", "", intro, "", "## Comparison (ranked by test accuracy, or validation accuracy without a test)", "", table, ""]
    md += [f"![{p.stem}]({p.name})" for p in images]
    for heading, text, extra_images in sections:
        md += ["", f"## {heading}", "", text, ""] + [f"![{p.stem}]({p.name})" for p in extra_images]
        images += extra_images
    md += ["", "## Runs", "", markdown_table([
        {"run": c.name, "status": c.status + (" (diverged)" if c.diverged else ""),
         "test acc": f"{c.metrics['test/acc']:.4f}" if "test/acc" in c.metrics else "–",
         "final val acc": f"{c.final('val/acc'):.4f}", "seconds": f"{c.seconds:.1f}" if c.seconds else "–",
         "run id": c.run_id} for c in children]) if children else "(none)"]
    md_path = folder / "report.md"
    md_path.write_text("\n".join(md) + "\n")

    csv_path = folder / "summary.csv"
    with open(csv_path, "w", newline="") as fh:
        if rows:
            writer = csv.DictWriter(fh, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
            writer.writeheader()
            writer.writerows(rows)

    html_path = folder / "report.html"
    html_path.write_text(_html(title, intro, rows, images, sections, children))
    return Report(folder, [md_path, html_path, csv_path, *images], table, len(children), n_failed, n_diverged)


def _html_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "<p>(none)</p>"
    columns = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, '')))}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}"></figure>'


def _html(title, intro, rows, images, sections, children) -> str:
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}"
             "table{border-collapse:collapse;font-size:13px;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f3f3f3}"
             "img{max-width:100%}figure{margin:1em 0}")
    main_images = [p for p in images if p.name in ("learning_curves.png", "test_accuracy.png")]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>",
             "<h2>Comparison (ranked by test accuracy, or validation accuracy without a test)</h2>", _html_table(rows), *map(_img, main_images)]
    for heading, text, extra_images in sections:
        parts += [f"<h2>{html.escape(heading)}</h2><pre>{html.escape(text)}</pre>", *map(_img, extra_images)]
    parts += ["<h2>Runs</h2>", _html_table([
        {"run": c.name, "status": c.status + (" (diverged)" if c.diverged else ""),
         "test acc": f"{c.metrics['test/acc']:.4f}" if "test/acc" in c.metrics else "–", "run id": c.run_id}
        for c in children]), "</body></html>"]
    return "\n".join(parts)


def find_sweep(client, sweep: str, experiment_name: str | None = None) -> str:
    """A sweep's parent run id: given as is, or `latest` (the newest parent run)."""
    from lightsweep.errors import LightsweepError

    if sweep != "latest":
        return client.get_run(sweep).info.run_id
    if experiment_name:
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            raise LightsweepError(f"no MLflow experiment named {experiment_name!r}: check experiment_name")
        experiments = [experiment]
    else:
        experiments = client.search_experiments()
    runs = client.search_runs(
        [e.experiment_id for e in experiments], filter_string="tags.`lightsweep.role` = 'sweep'",
        order_by=["attributes.start_time DESC"], max_results=1,
    )
    if not runs:
        raise LightsweepError("no sweep found in this store: run `python train.py -m ...` first, or pass sweep=<parent run id>")
    return runs[0].info.run_id


def publish_report(client, parent_run_id: str, folder: Path, target_acc: float) -> Report:
    """Write the report to `folder`, log it to the parent run under `report/`, print the table."""
    report = write_report(client, parent_run_id, folder, target_acc, extra_sections=benchmark_sections)
    for path in report.files:
        client.log_artifact(parent_run_id, str(path), "report")
    print(f"\n{report.table}\n")
    print(f"{report.n_runs} jobs, {report.n_failed} failed ({report.n_diverged} diverged). "
          f"Report: {report.folder / 'report.html'}")
    return report
