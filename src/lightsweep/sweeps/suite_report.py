"""The optimizer suite's report sections, built from MLflow (the sweep parent's children) like the rest of
the report: each trial's first step at the target, times its optimizer's seconds per step (its timing run),
then AlgoPerf's scoring (lightsweep.sweeps.scoring). Adds to the parent run the metrics `score/<optimizer>`
(and `score_mean/`, `score_std/` over studies) and the CSV files of the tables."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lightsweep.sweeps import scoring
from lightsweep.sweeps.runs import Section, format_value
from lightsweep.sweeps.suite import MONITOR, STAGE, STUDY, TARGET, TIMING, TRIAL, TRIALS, WORKLOAD

STEP_SECONDS = "time/step_s"
SEARCHED = "optimizer.search_space."  # a run's params: the preset's search space, key by key


def is_suite(runs: pd.DataFrame) -> bool:
    return bool(runs["stage"].isin([TIMING, TRIALS]).any())


def load(client, parent_run_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(timing runs: workload, optimizer, step_s; trials: one row per trial with its first step and epoch at
    the target and its searched values) of the suite under the parent run."""
    parent = client.get_run(parent_run_id)
    found = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
        max_results=10000,
    )
    timing, trials = [], []
    for run in found:
        tags, params = run.data.tags, run.data.params
        row = {"workload": tags.get(WORKLOAD), "optimizer": tags.get("optimizer"), "run_id": run.info.run_id}
        if tags.get(STAGE) == TIMING:
            timing.append({**row, "step_s": run.data.metrics.get(STEP_SECONDS, math.nan)})
        elif tags.get(STAGE) == TRIALS:
            target, budget = float(tags.get(TARGET, "nan")), params.get("trainer.max_epochs", "")
            history = sorted(client.get_metric_history(run.info.run_id, MONITOR), key=lambda m: m.step)
            hit = next((i for i, m in enumerate(history) if math.isfinite(m.value) and m.value >= target), None)
            searched = {k[len(SEARCHED) :]: params.get(k[len(SEARCHED) :]) for k in params if k.startswith(SEARCHED)}
            trials.append(
                {
                    **row,
                    "study": int(tags.get(STUDY, 0)),
                    "trial": int(tags.get(TRIAL, 0)),
                    "target": target,
                    "status": run.info.status,
                    "pruned": tags.get("lightsweep.pruned") == "true",
                    "budget": int(budget) if budget.isdigit() else 0,  # epochs
                    "epochs_run": len(history),
                    "best_acc": max((m.value for m in history), default=math.nan),
                    # optimizer steps taken when the target was first met: the logged step is the last step's index
                    "steps": history[hit].step + 1 if hit is not None else math.nan,
                    "epoch": hit + 1 if hit is not None else math.nan,
                    "params": searched,
                }
            )
    timing = pd.DataFrame(timing, columns=["workload", "optimizer", "run_id", "step_s"])
    trials = pd.DataFrame(
        trials,
        columns=[
            "workload",
            "optimizer",
            "run_id",
            "study",
            "trial",
            "target",
            "status",
            "pruned",
            "budget",
            "epochs_run",
            "best_acc",
            "steps",
            "epoch",
            "params",
        ],
    )
    step_s = timing.drop_duplicates(["workload", "optimizer"], keep="last").set_index(["workload", "optimizer"])
    seconds = [step_s["step_s"].get((w, o), math.nan) for w, o in zip(trials["workload"], trials["optimizer"])]
    trials["step_s"] = pd.Series(seconds, index=trials.index, dtype=float)
    # time to target = steps x the optimizer's own seconds per step (inf: never reached, or no timing)
    trials["time"] = (trials["steps"] * trials["step_s"]).fillna(math.inf).astype(float)
    return timing, trials.sort_values(["workload", "optimizer", "study", "trial"]).reset_index(drop=True)


def order_of(items, first) -> list:
    """`items` in the order of `first` (the suite's), others after."""
    items = list(dict.fromkeys(items))
    return [i for i in first if i in items] + [i for i in items if i not in first]


def plot_profiles(profile: pd.DataFrame, by_study: dict, scores: pd.Series) -> Figure:
    """rho(tau) per optimizer (step lines), each study's own profile as a faint line."""
    fig = Figure(figsize=(9, 5.5))
    ax = fig.subplots()
    colors = matplotlib.colormaps["tab10"]
    taus = profile.columns.to_numpy(dtype=float)
    for optimizer in scores.sort_values(ascending=False, kind="stable").index:  # the legend ranked by score
        color = colors(list(profile.index).index(optimizer) % 10)
        for study_profile in by_study.values():
            if optimizer in study_profile.index:
                ax.step(taus, study_profile.loc[optimizer], where="post", color=color, alpha=0.25, linewidth=1)
        label = f"{optimizer} (score {scores[optimizer]:.3f})"
        ax.step(taus, profile.loc[optimizer], where="post", color=color, linewidth=2.2, label=label)
    ax.set_xlim(1, scoring.R_MAX)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("tau: time to target within tau x the fastest optimizer's")
    ax.set_ylabel("fraction of workloads")
    ax.set_title("Performance profiles (AlgoPerf); faint: each study alone")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def seconds_cell(time: float, steps: float, epoch: float) -> str:
    if not math.isfinite(time):
        return "not reached"
    return f"{time:.2f} s ({int(steps)} steps, epoch {int(epoch)})"


def suite_sections(client, parent_run_id: str, folder: Path) -> list[Section]:
    """The suite's sections; also logs `score/<optimizer>` to the parent and writes the tables as CSV into
    `folder` (logged with the report)."""
    timing, trials = load(client, parent_run_id)
    if trials.empty:
        return []
    parent = client.get_run(parent_run_id)
    suite_order = parent.data.params.get("suite.optimizers", "").split(",")
    optimizers = order_of(trials["optimizer"], suite_order)
    workloads = list(dict.fromkeys(trials["workload"]))

    frame = trials.rename(columns={"optimizer": "algorithm"})
    studies = scoring.study_times(frame)
    times = scoring.workload_times(studies).reindex(index=optimizers, columns=workloads)
    ratios = scoring.performance_ratios(times.fillna(math.inf))
    scores = scoring.benchmark_scores(ratios)
    per_study = scoring.study_scores(studies).reindex(optimizers)
    taus = np.unique(np.concatenate([np.linspace(1.0, scoring.R_MAX, 301), ratios.to_numpy().ravel()]))
    taus = taus[np.isfinite(taus) & (taus >= 1.0) & (taus <= scoring.R_MAX)]
    profile = scoring.performance_profile(ratios, taus)
    by_study = {
        study: scoring.performance_profile(scoring.performance_ratios(scoring.workload_times(part)), taus)
        for study, part in studies.groupby("study")
    }

    n_studies = per_study.shape[1]
    score_table = pd.DataFrame(
        {
            "optimizer": optimizers,
            "score": scores.reindex(optimizers).map("{:.3f}".format),
            "per study: mean ± std": [
                f"{per_study.loc[o].mean():.3f} ± {per_study.loc[o].std(ddof=0):.3f}" for o in optimizers
            ],
            "per study: min – max": [
                f"{per_study.loc[o].min():.3f} – {per_study.loc[o].max():.3f}" for o in optimizers
            ],
            "workloads reached": [f"{int(np.isfinite(times.loc[o]).sum())}/{len(workloads)}" for o in optimizers],
        }
    )
    score_table = score_table.iloc[np.argsort(-scores.reindex(optimizers).to_numpy(), kind="stable")]
    sections = [
        Section(
            "Optimizer suite: benchmark scores (AlgoPerf)",
            f"{len(workloads)} workloads, {len(optimizers)} optimizers, "
            f"{int(trials.groupby(['workload', 'optimizer', 'study']).size().max())} quasirandom trials per study "
            f"and workload, {n_studies} stud{'y' if n_studies == 1 else 'ies'}. A trial's time to target is its steps to the "
            "workload's validation target times its optimizer's seconds per step, timed alone; a study's time is "
            "its fastest trial's, an optimizer's time on a workload the median over studies. Score: the area "
            f"under the performance profile from tau = 1 to {scoring.R_MAX:g}, normalised (1: fastest everywhere; "
            "0: never within 4x of the fastest). Per study: each study scored on its own.",
            score_table.reset_index(drop=True),
            {"performance_profile": plot_profiles(profile, by_study, scores)},
        )
    ]
    for workload in workloads:
        sections.append(workload_section(workload, trials, timing, studies, times, ratios, optimizers))
    sections.append(chosen_section(trials, studies, optimizers, workloads))

    folder.mkdir(parents=True, exist_ok=True)
    trials.drop(columns="params").assign(params=trials["params"].map(str)).to_csv(
        folder / "suite_trials.csv", index=False, lineterminator="\r\n"
    )
    times.to_csv(folder / "suite_time_to_target.csv", lineterminator="\r\n")
    pd.DataFrame({"score": scores, **{f"study {s}": per_study[s] for s in per_study}}).to_csv(
        folder / "suite_scores.csv", lineterminator="\r\n"
    )
    profile.to_csv(folder / "suite_performance_profile.csv", lineterminator="\r\n")
    log_scores(client, parent_run_id, scores, per_study)
    return sections


def workload_section(workload, trials, timing, studies, times, ratios, optimizers) -> Section:
    part = trials[trials["workload"] == workload]
    target, epochs = part["target"].iloc[0], int(part["budget"].max())
    rows = []
    for optimizer in optimizers:
        mine = part[part["optimizer"] == optimizer]
        if mine.empty:
            continue
        step_s = mine["step_s"].iloc[0]
        row = {"optimizer": optimizer, "ms per step (alone)": format_value(step_s * 1000, 2)}
        for study, runs in mine.groupby("study"):
            best = runs.loc[runs["time"].idxmin()] if np.isfinite(runs["time"]).any() else None
            row[f"study {study}"] = (
                seconds_cell(best["time"], best["steps"], best["epoch"]) if best is not None else "not reached"
            )
        median = times.loc[optimizer, workload]
        row["time to target (median)"] = f"{median:.2f} s" if math.isfinite(median) else "not reached"
        ratio = ratios.loc[optimizer, workload]
        row["x fastest"] = f"{ratio:.2f}" if math.isfinite(ratio) else "–"
        row["trials reached / pruned"] = (
            f"{int(np.isfinite(mine['time']).sum())}/{len(mine)} / {int(mine['pruned'].sum())}"
        )
        rows.append(row)
    table = pd.DataFrame(rows)
    table = table.iloc[np.argsort(times.reindex(table["optimizer"])[workload].to_numpy(), kind="stable")]
    return Section(
        f"Time to target: {workload}",
        f"Target: {MONITOR} >= {target:g}, checked after every epoch (budget: {epochs} epochs at most). Per study: "
        "its fastest trial's time (its steps to the target x the optimizer's seconds per step), steps and epoch.",
        table.reset_index(drop=True),
        {},
    )


def chosen_section(trials, studies, optimizers, workloads) -> Section:
    """Each study's fastest trial per workload and optimizer: its searched values."""
    rows = []
    for workload in workloads:
        for optimizer in optimizers:
            for study, runs in trials[(trials["workload"] == workload) & (trials["optimizer"] == optimizer)].groupby(
                "study"
            ):
                reached = runs[np.isfinite(runs["time"])]
                if reached.empty:
                    best, note = runs.loc[runs["best_acc"].idxmax()], "not reached (best val/acc shown)"
                else:
                    best, note = reached.loc[reached["time"].idxmin()], f"epoch {int(reached['epoch'].min())}"
                values = ", ".join(f"{k}={float(v):.3g}" for k, v in sorted(best["params"].items()))
                rows.append(
                    {
                        "workload": workload,
                        "optimizer": optimizer,
                        "study": study,
                        "trial": int(best["trial"]),
                        "chosen": values,
                        "val/acc": format_value(best["best_acc"]),
                        "at": note,
                    }
                )
    return Section(
        "Chosen hyperparameters (each study's fastest trial)",
        "The values each study's fastest trial drew from its optimizer's search space (conf/optimizer/<name>.yaml, "
        "`search_space`); where no trial reached the target, the trial with the best validation accuracy.",
        pd.DataFrame(rows),
        {},
    )


def log_scores(client, parent_run_id: str, scores: pd.Series, per_study: pd.DataFrame) -> None:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = []
    for optimizer, score in scores.items():
        metrics.append(Metric(f"score/{optimizer}", float(score), now, 0))
        if optimizer in per_study.index:
            metrics.append(Metric(f"score_mean/{optimizer}", float(per_study.loc[optimizer].mean()), now, 0))
            metrics.append(Metric(f"score_std/{optimizer}", float(per_study.loc[optimizer].std(ddof=0)), now, 0))
    client.log_batch(parent_run_id, metrics=metrics)
