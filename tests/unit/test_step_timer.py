"""StepTimer: the mean seconds per training batch after the first `skip`, logged when training ends."""

from __future__ import annotations

import pytest

from lightsweep.callbacks import StepTimer


class Logger:
    def __init__(self):
        self.logged = []

    def log_metrics(self, metrics, step):
        self.logged.append((metrics, step))


class Trainer:
    def __init__(self):
        self.loggers = [Logger()]
        self.global_step = 7


def timed(timer, trainer, seconds, monkeypatch):
    ticks = [t for s in seconds for t in (0.0, s)]
    clock = iter(ticks)
    monkeypatch.setattr("lightsweep.callbacks.timing.time.perf_counter", lambda: next(clock))
    for batch in range(len(seconds)):
        timer.on_train_batch_start(trainer, None, None, batch)
        timer.on_train_batch_end(trainer, None, None, None, batch)
    timer.on_train_end(trainer, None)


def test_median_of_block_means_after_the_warm_up(monkeypatch):
    # a warm-up batch, then blocks of 3: a heavier step every 3rd (amortized), one block slowed by another process
    seconds = [5.0, 0.1, 0.1, 0.4, 0.1, 0.1, 0.4, 0.9, 0.9, 1.2, 0.1, 0.1, 0.4, 0.1]
    timer, trainer = StepTimer(skip=1, block=3), Trainer()
    timed(timer, trainer, seconds, monkeypatch)
    ((metrics, step),) = trainer.loggers[0].logged
    assert metrics["time/step_s"] == pytest.approx(0.2)  # blocks 0.2, 0.2, 1.0, 0.2 (the last, short, left out)
    assert metrics["time/steps_timed"] == 13 and step == 7


def test_fewer_steps_than_a_block_are_averaged(monkeypatch):
    timer, trainer = StepTimer(skip=1, block=10), Trainer()
    timed(timer, trainer, [5.0, 0.1, 0.3], monkeypatch)
    assert trainer.loggers[0].logged[0][0]["time/step_s"] == pytest.approx(0.2)


def test_nothing_logged_without_steps_past_the_warm_up():
    timer, trainer = StepTimer(skip=10), Trainer()
    timer.on_train_end(trainer, None)
    assert trainer.loggers[0].logged == []
