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


def test_mean_of_the_steps_after_the_first_skip(monkeypatch):
    clock = iter([0.0, 5.0, 5.0, 5.1, 5.1, 5.4, 5.4, 5.5])  # batch seconds: 5 (warm-up), 0.1, 0.3, 0.1
    monkeypatch.setattr("lightsweep.callbacks.timing.time.perf_counter", lambda: next(clock))
    timer, trainer = StepTimer(skip=1), Trainer()
    for batch in range(4):
        timer.on_train_batch_start(trainer, None, None, batch)
        timer.on_train_batch_end(trainer, None, None, None, batch)
    timer.on_train_end(trainer, None)
    ((metrics, step),) = trainer.loggers[0].logged
    assert metrics["time/step_s"] == pytest.approx(0.5 / 3)
    assert metrics["time/steps_timed"] == 3 and step == 7


def test_nothing_logged_without_steps_past_the_warm_up():
    timer, trainer = StepTimer(skip=10), Trainer()
    timer.on_train_end(trainer, None)
    assert trainer.loggers[0].logged == []
