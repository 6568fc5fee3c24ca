"""tracking.batches, the one way metric and param lists reach a run: MLflow's limits per call, what a
failed call leaves to send, and a Ctrl-C that waits until the lists are stored."""

from __future__ import annotations

import os
import signal

import pytest
from mlflow.entities import Metric, Param

from lightsweep import interrupts
from lightsweep.tracking.batches import MAX_METRICS, MAX_PARAMS, drain, log_batch


class Client:
    """Records each log_batch call; `fail_at` (a call number) raises there, `signal_at` sends SIGINT."""

    def __init__(self, fail_at: int | None = None, signal_at: int | None = None):
        self.calls: list[tuple[str, list]] = []
        self.fail_at, self.signal_at = fail_at, signal_at

    def log_batch(self, run_id, metrics=(), params=()):
        number = len(self.calls) + 1
        if number == self.signal_at:
            os.kill(os.getpid(), signal.SIGINT)
        if number == self.fail_at:
            raise ConnectionError("the store went away")
        self.calls.append(("metrics", list(metrics)) if metrics else ("params", list(params)))


def metrics(n: int) -> list[Metric]:
    return [Metric("loss", float(i), 0, i) for i in range(n)]


def test_metrics_and_params_go_in_as_few_calls_as_mlflow_allows():
    client = Client()
    sent_metrics, sent_params = metrics(2 * MAX_METRICS + 1), [Param(f"p{i}", "v") for i in range(MAX_PARAMS + 1)]
    log_batch(client, "run", metrics=sent_metrics, params=sent_params)
    assert [(kind, len(items)) for kind, items in client.calls] == [
        ("params", MAX_PARAMS),
        ("params", 1),
        ("metrics", MAX_METRICS),
        ("metrics", MAX_METRICS),
        ("metrics", 1),
    ]
    assert [m for kind, items in client.calls if kind == "metrics" for m in items] == sent_metrics
    assert len(sent_metrics) == 2 * MAX_METRICS + 1  # log_batch leaves the caller's lists alone
    log_batch(client, "run")  # nothing: no call
    assert len(client.calls) == 5


def test_a_failed_call_leaves_what_it_did_not_store_in_the_queue():
    queue = metrics(MAX_METRICS + 10)
    with pytest.raises(ConnectionError):
        drain(Client(fail_at=2), "run", queue)
    assert queue == metrics(MAX_METRICS + 10)[MAX_METRICS:]  # the first call's share is stored and gone
    drain(client := Client(), "run", queue)
    assert queue == [] and [len(items) for _, items in client.calls] == [10]


def test_a_ctrl_c_during_the_batches_is_raised_once_all_are_stored():
    client = Client(signal_at=1)
    with interrupts.handled(), pytest.raises(KeyboardInterrupt):
        log_batch(client, "run", metrics=metrics(3 * MAX_METRICS))
    assert [len(items) for _, items in client.calls] == [MAX_METRICS] * 3
