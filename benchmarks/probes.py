"""A timing callback the benchmark adds to lightsweep runs (`+callbacks.bench_probe._target_=probes.BenchProbe`).

It works the same whether Lightning calls `training_step` once per batch (the current code:
automatic optimization) or once per several batches (the fused steps of the code before the
refactor, timed by `speed.py --before`): the epoch hooks and the first `on_train_batch_start` are
called either way, and the per-batch hook costs one attribute check (the same on every side).

It only reads the clock: epoch boundaries (each `on_train_epoch_start`, and `on_train_end` after the
last epoch's validation, checkpointing and logging), the wall-clock time of the first training
step (and the process's CPU seconds by then), written to $BENCH_FIRST_STEP_FILE when that is set (for runs in a subprocess), and the final
epoch's metrics (to check that the baseline computes the same thing).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytorch_lightning as pl

PROBES: list["BenchProbe"] = []  # the probes of the runs not yet read (speed.py empties it)


class BenchProbe(pl.Callback):
    def __init__(self):
        self.marks: list[float] = []  # perf_counter at each epoch start, then at the end of training
        self.cpu_marks: list[float] = []  # the same, in this process's CPU seconds
        self.first_step: float | None = None
        self.final_metrics: dict[str, float] = {}  # callback_metrics after the last epoch
        PROBES.append(self)

    def _mark(self) -> None:
        self.marks.append(time.perf_counter())
        self.cpu_marks.append(time.process_time())

    def on_train_epoch_start(self, trainer, pl_module):
        self._mark()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.first_step is None:
            self.first_step = time.time()
            if path := os.environ.get("BENCH_FIRST_STEP_FILE"):
                Path(path).write_text(f"{self.first_step!r} {time.process_time()!r}")

    def on_train_end(self, trainer, pl_module):
        self._mark()
        self.final_metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}

    @property
    def epoch_seconds(self) -> list[float]:
        return [b - a for a, b in zip(self.marks, self.marks[1:])]

    @property
    def epoch_cpu_seconds(self) -> list[float]:
        return [b - a for a, b in zip(self.cpu_marks, self.cpu_marks[1:])]
