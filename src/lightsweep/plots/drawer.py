"""Where a run's figures are drawn, and what waits for them.

`Drawer` draws each figure when it is submitted, in this process (a single run), and runs what waits
for figures (`then`: uploading them, ending the run) at once. `Workers` draws in worker processes, one
per core, at a lower priority, several runs' figures at once (a vectorized group's members): what waits
for them runs later, in this process, in the order it was asked for, at `poll()` (the next group's epoch
ends) or `drain()` (the launcher's end), so that a group's figures draw while the next group trains.
The figures' functions are the same either way (`lightsweep.plots`, on plain arrays).
"""

from __future__ import annotations

import atexit
import os
import signal
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context


class Drawer:
    """Draws each figure when it is submitted, here; `then` runs at once (errors raise, as any)."""

    def submit(self, function, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(function(*args))
        except BaseException as err:
            future.set_exception(err)
        return future

    def then(self, key, futures, action) -> None:
        """Run `action()` once `futures` are drawn, for `key` (the run they belong to)."""
        for future in futures:
            future.result()
        action()

    def error(self, key) -> BaseException | None:
        """The error a figure or an action of `key` raised, kept for its run's end (none here: they raise)."""
        return None

    def poll(self) -> None:
        pass

    def drain(self) -> None:
        pass


class Workers(Drawer):
    """Draws figures in worker processes; `then` waits in a queue: `poll` runs what is ready (in order),
    `drain` all of it. A figure or action that fails is kept for its key (`error`), not raised: it is
    its run's failure, not that of whatever this process is doing then."""

    def __init__(self, workers: int | None = None):
        self.workers = workers or os.cpu_count() or 1
        self.pool: ProcessPoolExecutor | None = None
        self.waiting: deque = deque()
        self.errors: dict = {}

    def submit(self, function, *args) -> Future:
        if self.pool is None:
            # spawn: a fresh interpreter that imports matplotlib and numpy only (no fork of this
            # process's threads); niced: drawing takes what the training leaves of the cores
            self.pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"), initializer=_worker)
            atexit.register(self.close)
        return self.pool.submit(function, *args)

    def then(self, key, futures, action) -> None:
        self.waiting.append((key, list(futures), action))

    def error(self, key) -> BaseException | None:
        return self.errors.pop(key, None)

    def poll(self) -> None:
        while self.waiting and all(future.done() for future in self.waiting[0][1]):
            self._run(*self.waiting.popleft())

    def drain(self) -> None:
        while self.waiting:
            self._run(*self.waiting.popleft())

    def _run(self, key, futures, action) -> None:
        try:
            for future in futures:
                future.result()
            action()
        except Exception as err:
            self.errors.setdefault(key, err)  # the first: what its run's end reports

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None


def _worker() -> None:
    """A worker leaves Ctrl-C to the process that owns the runs (a terminal sends it to the group), and
    yields the cores to training."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(10)


_shared: Workers | None = None


def workers() -> Workers:
    """This process's one pool of figure workers."""
    global _shared
    if _shared is None:
        _shared = Workers()
    return _shared
