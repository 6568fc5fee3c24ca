"""`kill -9` at any moment of a run: it is either RUNNING, and `resume=last` completes it, or FINISHED
and complete. FINISHED is written last, by lightsweep's lifecycle, once everything is stored."""

from __future__ import annotations

import pytest
from helpers import QUIET, all_runs, artifact_paths, kill_9_at, run_cli, store

pytestmark = pytest.mark.slow

EPOCHS, STEPS = 3, 10
RUN = [
    "trainer.deterministic=true",
    f"trainer.max_epochs={EPOCHS}",
    f"trainer.limit_train_batches={STEPS}",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.log_every_n_steps=5",
    *QUIET,
]
COMPLETE = {"config.yaml", "plots/learning_curves.png", "plots/confusion_matrix.png", "plots/weights.png"}


def assert_complete(client, run) -> None:
    assert run.info.status == "FINISHED"
    artifacts = artifact_paths(client, run.info.run_id)
    assert COMPLETE <= artifacts, artifacts
    assert [a for a in artifacts if a.startswith("checkpoints/") and a.endswith(".ckpt")], artifacts
    assert {"test/acc", "test/loss", "val/acc", "train/loss_epoch"} <= set(run.data.metrics)
    epoch_ends = {STEPS * (epoch + 1) - 1 for epoch in range(EPOCHS)}
    for key in ("val/acc", "train/acc"):
        assert {m.step for m in client.get_metric_history(run.info.run_id, key)} == epoch_ends, key
    assert "model.input_dim" in run.data.params


@pytest.mark.parametrize(
    "moment",
    [
        "lightsweep.callbacks.history:EpochHistory.on_train_epoch_end#2",  # training, after a checkpoint
        "pytorch_lightning:Trainer.test",  # right after fit
        "lightsweep.models.base:Classifier.test_step",  # during the test
        "lightsweep.plots:learning_curves",  # plots at the end of fit
        "mlflow.tracking:MlflowClient.log_artifact@checkpoints",  # the best checkpoint's upload
        "lightsweep.plots:confusion_matrix",  # plots after the test
        "lightsweep.tracking.run:end_run",  # the final status write
    ],
)
def test_kill_9_leaves_a_resumable_or_a_complete_run(tmp_path, moment):
    kill_9_at(tmp_path, moment, *RUN)

    client = store(tmp_path)
    (run,) = all_runs(client)
    assert run.info.status == "RUNNING"  # never FINISHED before everything is stored
    resumed = run_cli(tmp_path, *RUN, "resume=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (after,) = all_runs(client)
    assert after.info.run_id == run.info.run_id
    assert_complete(client, after)
