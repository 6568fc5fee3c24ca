"""Where a run's figures are drawn: in this process, one after another (a single run), or in worker
processes, several runs' figures at once (a vectorized group's members). Either way `submit` returns a
future of the file's path; the figures' functions are the same (`lightsweep.plots`, on plain arrays).
"""

from __future__ import annotations

import atexit
import os
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context


class Drawer:
    """Draws each figure when it is submitted, here."""

    def submit(self, function, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(function(*args))
        except BaseException as err:
            future.set_exception(err)
        return future


class Workers(Drawer):
    """Draws figures in worker processes (one per core), started on the first figure and ended with
    the process: while they draw, this process goes on (uploading, the next member's figures)."""

    def __init__(self, workers: int | None = None):
        self.workers = workers or os.cpu_count() or 1
        self.pool: ProcessPoolExecutor | None = None

    def submit(self, function, *args) -> Future:
        if self.pool is None:
            # spawn: a fresh interpreter that imports matplotlib and numpy only (no torch, no fork of
            # this process's threads)
            self.pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"), initializer=_quiet)
            atexit.register(self.close)
        return self.pool.submit(function, *args)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None


def _quiet() -> None:
    """A worker leaves Ctrl-C to the process that owns the run (the terminal sends it to the group)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


_shared: Workers | None = None


def workers() -> Workers:
    """This process's one pool of figure workers."""
    global _shared
    if _shared is None:
        _shared = Workers()
    return _shared
