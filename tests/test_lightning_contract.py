"""lightsweep plays by Lightning's rules: one batch per training step, hooks as documented, a logger
that logs but never ends the run, and data that stays on the trainer's device."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from helpers import tracking_uri
from hydra.utils import instantiate
from mlflow.tracking import MlflowClient

from lightsweep.train import train


class BatchCounter(pl.Callback):
    """A user's own callback, added from the command line (`+callbacks.counter._target_=...`)."""

    seen: list = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        BatchCounter.seen.append((trainer.current_epoch, batch_idx, trainer.global_step, len(batch[0])))


def test_a_users_callback_sees_every_batch_with_lightnings_batch_idx(make_cfg, tmp_path):
    BatchCounter.seen = []
    cfg = make_cfg(
        "trainer.limit_train_batches=23",
        "trainer.log_every_n_steps=5",
        "data.batch_size=32",
        "+callbacks.counter._target_=test_lightning_contract.BatchCounter",
        "+callbacks.every_7._target_=pytorch_lightning.callbacks.ModelCheckpoint",
        f"+callbacks.every_7.dirpath={tmp_path / 'every_7'}",
        "+callbacks.every_7.every_n_train_steps=7",
        "+callbacks.every_7.save_top_k=-1",
        "+callbacks.every_7.filename='{step}'",
    )
    metrics = train(cfg)
    # 2 epochs x 23 batches: one call per batch, batch_idx 0..22 in each epoch, one optimizer step each.
    assert [(e, i) for e, i, _, _ in BatchCounter.seen] == [(e, i) for e in range(2) for i in range(23)]
    assert [step for _, _, step, _ in BatchCounter.seen] == list(range(1, 47))
    assert {size for *_, size in BatchCounter.seen} == {32}
    # ModelCheckpoint(every_n_train_steps=7) fires at the steps Lightning documents.
    assert {p.name for p in (tmp_path / "every_7").iterdir()} == {f"step={s}.ckpt" for s in range(7, 47, 7)}
    # train/loss reaches MLflow every log_every_n_steps=5 steps, at Lightning's own step numbers.
    client = MlflowClient(tracking_uri(tmp_path))
    steps = [m.step for m in client.get_metric_history(metrics["run_id"], "train/loss")]
    assert steps == list(range(4, 46, 5))


def test_gradient_clipping_and_accumulation_are_lightnings(make_cfg):
    cfg = make_cfg(
        "logger=none",
        "trainer.gradient_clip_val=0.5",
        "+trainer.accumulate_grad_batches=2",
        "+trainer.val_check_interval=4",
    )
    metrics = train(cfg)
    assert metrics["test/acc"] > 0.2


def test_the_logger_logs_in_batches_and_never_ends_the_run(tmp_path):
    from lightsweep.tracking.logger import MLFlowLogger
    from lightsweep.tracking.store import open_store

    uri = tracking_uri(tmp_path)
    client = open_store(uri)
    run_id = client.create_run(client.create_experiment("x")).info.run_id
    logger = MLFlowLogger(tracking_uri=uri, run_id=run_id, flush_every_s=3600, prefix="p")
    for step in range(2500):
        logger.log_metrics({"a": float(step), "b": step / 2}, step=step)
    assert client.get_metric_history(run_id, "p-a") == []  # queued, not sent
    for status in ("success", "failed"):
        logger.finalize(status)  # Lightning calls it after every fit and test: it only flushes
    history = client.get_metric_history(run_id, "p-a")
    assert [(m.step, m.value) for m in history] == [(s, float(s)) for s in range(2500)]
    assert len(client.get_metric_history(run_id, "p-b")) == 2500
    assert client.get_run(run_id).info.status == "RUNNING"  # only lightsweep's lifecycle ends it


def test_device_resident_data_and_batches_stay_on_the_trainer_device(make_cfg):
    """`trainer=gpu` keeps the data on the GPU; the same code path, with a device that is not the CPU."""
    datamodule = instantiate(make_cfg("data=digits").data, _convert_="all")
    meta = torch.device("meta")  # no GPU here: a device without data, which still types every tensor
    datamodule.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=meta), global_rank=0, world_size=1)
    datamodule.setup("fit")
    assert {t.device for pair in datamodule.tensors.values() for t in pair} == {meta}
    batches = datamodule.train_dataloader()
    batches.set_epoch(1)
    for loader in (batches, datamodule.val_dataloader()):
        assert {t.device for batch in loader for t in batch} == {meta}


def test_bf16_mixed_trains(make_cfg):
    """`trainer=gpu` trains in bf16-mixed; on the CPU autocast does the same."""
    metrics = train(make_cfg("data.device_resident=true", "trainer.precision=bf16-mixed", "logger=none"))
    assert torch.isfinite(torch.tensor(metrics["train/loss_epoch"])) and metrics["test/acc"] > 0.2


# Parallel sweep jobs (joblib) log Lightning to their own log file:
# test_sweep.py::test_a_failed_report_fails_the_parent_and_the_compare_pipeline_rebuilds_it.


def test_cli_pauses_the_collector_for_imports_and_a_run_resumes_it(make_cfg):
    """`python train.py` imports with the cyclic collector off; the run freezes what exists by then
    and turns it back on before it builds data, model and trainer."""
    import gc

    from lightsweep import startup

    assert gc.isenabled()
    startup.resume_gc()  # not paused: nothing to do
    assert gc.isenabled() and gc.get_freeze_count() == 0
    startup.pause_gc()
    try:
        assert not gc.isenabled()
        train(make_cfg("logger=none"))
        assert gc.isenabled() and gc.get_freeze_count() > 0
    finally:
        startup.resume_gc()
        gc.unfreeze()


@pytest.mark.parametrize(
    "override, key",
    [
        ("optimizer=adam optimizer.betas=[2,3]", "optimizer.betas=[2, 3]"),
        ("optimizer=rmsprop optimizer.alpha=-1", "optimizer.alpha=-1"),
        ("optimizer=adam optimizer.eps=-1", "optimizer.eps=-1"),
        ("optimizer=adagrad optimizer.lr_decay=-1", "optimizer.lr_decay=-1"),
    ],
)
def test_values_torch_rejects_name_their_key(make_cfg, override, key):
    from lightsweep.errors import LightsweepError

    with pytest.raises(LightsweepError, match=key.replace("[", r"\[").replace("]", r"\]")):
        train(make_cfg("logger=none", *override.split()))
