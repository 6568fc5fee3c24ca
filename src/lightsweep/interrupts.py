"""Ctrl-C and SIGTERM: stop a run or a sweep within seconds, whatever it is doing, and never lose one.

While `handled()` is active, SIGINT raises KeyboardInterrupt and SIGTERM raises `Terminated` (a
KeyboardInterrupt, so Lightning treats both alike: its `on_exception` hooks run, then it exits).
Two gaps are closed:

- Writes that must not be cut (a run's status, a batch of metrics going to the store) run inside
  `deferred()`: a signal that arrives there is raised when the write is done. An exception raised
  inside SQLAlchemy or MLflow can be caught and dropped there; then the signal is lost and the
  run goes on.
- Lightning answers the first KeyboardInterrupt by setting SIGINT to SIG_IGN and never restores it;
  `check()` re-arms the handler after each trainer call, and raises a signal that something
  swallowed (the `SignalCheck` callback asks at every batch end).
- A signal that comes while the garbage collector runs a `__del__` or a weakref callback is raised
  inside it, where Python cannot propagate it and prints it as an ignored exception. The block's
  `sys.unraisablehook` keeps quiet about it; the signal is still received, and `check()` raises it.

A SLURM task being requeued (lightsweep.requeue) is ended with SIGTERM: `ignore("SIGTERM")` drops it.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that Lightning and the run's lifecycle treat both alike."""


class _State:
    received: str | None = None  # the signal's name, until lightsweep has acted on it
    acted_on: str | None = None  # the last one lightsweep acted on (the process is on its way out)
    depth = 0  # nested handled() blocks
    ignored: set = set()  # names of signals that are not interrupts now (a task being requeued)
    deferring = 0  # nested deferred() blocks
    previous: dict = {}
    previous_unraisable = staticmethod(sys.unraisablehook)


_state = _State()


def _exception(name: str) -> KeyboardInterrupt:
    return Terminated() if name == "SIGTERM" else KeyboardInterrupt()


def _handler(signum, frame) -> None:
    if signal.Signals(signum).name in _state.ignored:
        return
    _state.received = signal.Signals(signum).name
    if not _state.deferring:
        raise _exception(_state.received)


def _unraisable(unraisable) -> None:
    """sys.unraisablehook while handled(): a received signal dropped in a finalizer waits for
    `check()`; anything else goes to the previous hook."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt) and _state.received is not None:
        return
    _state.previous_unraisable(unraisable)


@contextlib.contextmanager
def handled():
    """Install the handlers for the block (main thread only; nested blocks share them)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _state.depth == 0:
        _state.previous = {s: signal.getsignal(s) for s in SIGNALS}
        _state.received = _state.acted_on = None
        for s in SIGNALS:
            signal.signal(s, _handler)
        _state.previous_unraisable, sys.unraisablehook = sys.unraisablehook, _unraisable
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
        if _state.depth == 0:
            for s, previous in _state.previous.items():
                signal.signal(s, previous)
            sys.unraisablehook = _state.previous_unraisable


def ignore(name: str, ignored: bool = True) -> None:
    """From now on signal `name` ("SIGTERM") is not an interrupt (or is one again: `ignored=False`)."""
    if ignored:
        _state.ignored.add(name)
    else:
        _state.ignored.discard(name)


def received() -> str | None:
    """ "SIGINT"/"SIGTERM" if one arrived and was not yet acted on."""
    return _state.received


def acknowledge() -> str | None:
    """lightsweep has acted on the signal (the run is KILLED): later checks do not raise it again."""
    name, _state.received = _state.received, None
    _state.acted_on = name or _state.acted_on
    return name


def check() -> None:
    """Re-arm the handlers (Lightning leaves SIGINT ignored) and raise a signal that was swallowed."""
    if (
        _state.depth
        and signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        and threading.current_thread() is threading.main_thread()
    ):
        signal.signal(signal.SIGINT, _handler)
    if _state.received is None or _state.deferring:
        return
    if sys.exc_info()[1] is not None:
        return  # an exception is on its way up (e.g. Lightning's teardown after the interrupt)
    raise _exception(_state.received)


@contextlib.contextmanager
def deferred():
    """A signal arriving in the block is raised when the block ends, not in the middle of it."""
    with held() as hold:
        yield
        hold.release()


class held:
    """`deferred()` with an end the caller picks: `release()` raises a signal that arrived meanwhile.

    For a run's creation: a signal must wait until the lifecycle that ends the run owns it, or the
    run stays RUNNING forever.
    """

    def __init__(self):
        self.active = False

    def __enter__(self) -> held:
        _state.deferring += 1
        self.active = True
        return self

    def release(self) -> None:
        if self.active:
            self.active = False
            _state.deferring -= 1
            check()

    def __exit__(self, *exc) -> None:
        if self.active:  # an error on its way up; `interruption()` still sees the signal
            self.active = False
            _state.deferring -= 1


def interruption(err: BaseException | None) -> str | None:
    """ "SIGINT"/"SIGTERM" when `err` is, or was raised while handling, an interrupt; else None.

    Lightning answers Ctrl-C with `sys.exit(1)` and SIGTERM with a `SIGTERMException` (a SystemExit),
    so the interrupt is often the context of what reaches us.
    """
    # Not imported here: the signal may have cut the import of Lightning itself short. If Lightning
    # is not (fully) imported, it raised nothing.
    lightning = sys.modules.get("pytorch_lightning.utilities.exceptions")
    sigterm = (Terminated, getattr(lightning, "SIGTERMException", Terminated))
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, sigterm):
            return "SIGTERM"
        if isinstance(err, KeyboardInterrupt):
            return "SIGINT"
        err = err.__cause__ or err.__context__
    return _state.received or _state.acted_on
