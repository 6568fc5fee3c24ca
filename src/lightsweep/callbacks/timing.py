"""Seconds per optimizer step of a run, measured inside its training loop."""

from __future__ import annotations

import statistics
import time

import pytorch_lightning as pl

STEP_SECONDS = "time/step_s"


class StepTimer(pl.Callback):
    """Times each training batch (forward, backward, optimizer step: from `on_train_batch_start` to
    `on_train_batch_end`), and logs when training ends `time/step_s` and `time/steps_timed`.

    `time/step_s` is the median, over blocks of `block` consecutive batches after the first `skip`, of the
    block's mean: the mean amortizes the heavier work that some optimizers do every k steps (SOAP refreshes
    its preconditioner every 10), the median leaves out blocks that another process slowed down.

    A callback for one model: a vectorized group's batches are every member's at once, so the optimizer
    suite times each optimizer in a run of its own."""

    def __init__(self, skip: int = 10, block: int = 10):
        self.skip, self.block = int(skip), int(block)
        self.seconds: list[float] = []
        self.started: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.started is not None:
            self.seconds.append(time.perf_counter() - self.started)
            self.started = None

    @property
    def step_seconds(self) -> float | None:
        timed = self.seconds[self.skip :]
        blocks = [timed[i : i + self.block] for i in range(0, len(timed), self.block)]
        means = sorted(sum(b) / len(b) for b in blocks if len(b) == self.block) or [sum(timed) / max(len(timed), 1)]
        return statistics.median(means) if timed else None

    def on_train_end(self, trainer, pl_module) -> None:
        if self.step_seconds is None:
            return
        values = {STEP_SECONDS: self.step_seconds, "time/steps_timed": float(len(self.seconds) - self.skip)}
        for logger in trainer.loggers:
            logger.log_metrics(values, step=trainer.global_step)
