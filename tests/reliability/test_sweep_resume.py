"""An interrupted sweep resumed with the same command plus `resume=last`: the same parent run, one child
per job, finished jobs kept, an interrupted vectorized group continued from its own checkpoint.
Real processes, `kill -9`, a real sqlite store in tmp_path."""

from __future__ import annotations

import pytest
from helpers import QUIET, assert_short_error, kill_9_at, run_sweep, sweep_runs

pytestmark = pytest.mark.slow

# Deterministic on CPU (softmax, no dropout): a resumed sweep must end exactly where an uninterrupted one does.
SWEEP = [
    "optimizer=sgd,adam,nadam",
    "data=digits",
    "trainer.max_epochs=4",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
]


def outcome(tmp_path) -> tuple[list, dict[str, tuple[str, float]]]:
    """(the parents, {run name: (status, test/acc)}) of the sweep's store; one child per job."""
    _, parents, children, _ = sweep_runs(tmp_path)
    names = [c.info.run_name for c in children]
    assert len(names) == len(set(names)) == 3, names
    return parents, {c.info.run_name: (c.info.status, c.data.metrics.get("test/acc")) for c in children}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, tuple[str, float]]:
    tmp_path = tmp_path_factory.mktemp("uninterrupted")
    result = run_sweep(tmp_path, "hydra/launcher=vectorized", *SWEEP)
    assert result.returncode == 0, result.stderr[-3000:]
    return outcome(tmp_path)[1]


def test_a_killed_vectorized_group_continues_from_its_checkpoint(tmp_path, uninterrupted):
    # Killed as the group's third epoch ends: its own checkpoint holds two complete epochs.
    kill_9_at(
        tmp_path,
        "lightsweep.vectorized.module:StackedClassifier.on_train_epoch_end#3",
        "-m",
        "hydra/launcher=vectorized",
        *SWEEP,
        *QUIET,
    )
    parents, killed = outcome(tmp_path)
    assert {status for status, _ in killed.values()} == {"RUNNING"}
    resumed = run_sweep(tmp_path, "hydra/launcher=vectorized", *SWEEP, "resume=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "continues from" in resumed.stdout + resumed.stderr
    after_parents, after = outcome(tmp_path)
    assert [p.info.run_id for p in after_parents] == [p.info.run_id for p in parents]  # the same parent
    assert after_parents[0].info.status == "FINISHED"
    assert after == uninterrupted  # each child's test accuracy: the uninterrupted sweep's
    _, _, children, _ = sweep_runs(tmp_path)
    assert {c.data.tags["lightsweep.resumed"] for c in children} == {"1"}


def test_a_killed_basic_sweep_keeps_its_finished_jobs(tmp_path, uninterrupted):
    # Killed as the second job starts training: the first is FINISHED, the third never started.
    kill_9_at(tmp_path, "lightsweep.train:fit_and_test#2", "-m", *SWEEP, *QUIET)
    _, _, children, _ = sweep_runs(tmp_path)
    first = next(c for c in children if c.info.status == "FINISHED")
    assert sorted(c.info.status for c in children) == ["FINISHED", "RUNNING"]
    resumed = run_sweep(tmp_path, *SWEEP, "resume=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    parents, after = outcome(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert after == uninterrupted
    _, _, children, _ = sweep_runs(tmp_path)
    kept = next(c for c in children if c.info.run_id == first.info.run_id)
    assert kept.info.end_time == first.info.end_time and "lightsweep.resumed" not in kept.data.tags


def test_resume_of_a_sweep_refuses_what_it_cannot_continue(tmp_path):
    nothing = run_sweep(tmp_path, *SWEEP, "resume=last")
    assert nothing.returncode == 2
    assert_short_error(nothing, "resume=last: no interrupted sweep in this experiment")
    finished = run_sweep(tmp_path, "optimizer=sgd", "data=digits", "trainer.max_epochs=1")
    assert finished.returncode == 0, finished.stderr[-3000:]
    _, (parent,), _, _ = sweep_runs(tmp_path)
    again = run_sweep(tmp_path, "optimizer=sgd", "data=digits", "trainer.max_epochs=1", f"resume={parent.info.run_id}")
    assert again.returncode == 2
    assert_short_error(again, f"sweep {parent.info.run_id} already finished")
