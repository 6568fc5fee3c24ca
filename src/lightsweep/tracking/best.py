"""Which checkpoint of a run, and which run of a sweep, is the best: read from the runs' histories.

A run's best checkpoint is where its checkpoint's monitor (val/acc by default) was first at its best;
a sweep's best run is its FINISHED child with the highest validation accuracy there (never by test
accuracy; in an optimizer benchmark among its final seeded runs; a trial its pruner stopped is none).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lightsweep.errors import LightsweepError


@dataclass
class BestCheckpoint:
    step: int  # the step its epoch's metrics were logged at
    val_acc: float  # validation accuracy at that step


def best_checkpoint(client, run) -> BestCheckpoint | None:
    """Where the run's best checkpoint was saved, from its history: the first best value of the
    checkpoint's monitor (ModelCheckpoint keeps the first of equal scores), and `val/acc` there."""
    params = run.data.params
    monitor = params.get("callbacks.model_checkpoint.monitor") or "val/acc"
    mode = params.get("callbacks.model_checkpoint.mode") or "max"
    run_id = run.info.run_id
    acc = {m.step: m.value for m in client.get_metric_history(run_id, "val/acc")}
    history = acc if monitor == "val/acc" else {m.step: m.value for m in client.get_metric_history(run_id, monitor)}
    points = sorted((step, value) for step, value in history.items() if math.isfinite(value))
    if not points:
        return None
    sign = 1 if mode == "max" else -1
    step, _ = max(points, key=lambda p: (sign * p[1], -p[0]))
    return BestCheckpoint(step, acc.get(step, math.nan))


@dataclass
class Candidate:
    run: object
    best: BestCheckpoint


def sweep_children(client, parent_run_id: str) -> list:
    parent = client.get_run(parent_run_id)
    return client.search_runs(
        [parent.info.experiment_id], max_results=10000, filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'"
    )


def best_child(client, parent_run_id: str) -> Candidate:
    """The sweep's FINISHED child with the best validation accuracy at its best checkpoint (never by
    test accuracy); for the optimizer benchmark among its final seeded runs (tag stage=final). A trial
    that a search's pruner stopped early is not a candidate (Optuna's best trial is a complete one)."""
    children = [
        c
        for c in sweep_children(client, parent_run_id)
        if c.info.status == "FINISHED" and c.data.tags.get("lightsweep.pruned") != "true"
    ]
    if any(c.data.tags.get("stage") == "final" for c in children):
        children = [c for c in children if c.data.tags.get("stage") == "final"]
    candidates = []
    for child in children:
        best = best_checkpoint(client, child)
        if best is not None and math.isfinite(best.val_acc):
            candidates.append(Candidate(child, best))
    if not candidates:
        raise LightsweepError(
            f"sweep {parent_run_id} has no FINISHED run with a validation accuracy: nothing to register; "
            "rerun its failed jobs, or pass run=<run id>"
        )

    def job(c):
        return int(c.run.data.tags.get("lightsweep.job", "0") or 0)

    return max(candidates, key=lambda c: (c.best.val_acc, -job(c)))
