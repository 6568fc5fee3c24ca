"""A signal that lands in a finalizer: not printed as an ignored exception, raised by the next check()."""

from __future__ import annotations

import signal
import sys

import pytest

from lightsweep import interrupts


class SignalOnDelete:
    """Its `__del__` receives a signal, as one run by the garbage collector may when Ctrl-C comes."""

    def __init__(self, signum=None, error=None):
        self.signum, self.error = signum, error

    def __del__(self):
        if self.signum is not None:
            signal.raise_signal(self.signum)  # the handler runs here, inside __del__
        if self.error is not None:
            raise self.error


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_raised_in_a_finalizer_waits_for_the_next_check(stop):
    seen = []
    previous, sys.unraisablehook = sys.unraisablehook, seen.append
    try:
        with interrupts.handled():
            SignalOnDelete(stop)  # dropped at once: Python cannot raise out of its __del__
            assert interrupts.received() == stop.name
            with pytest.raises(KeyboardInterrupt):
                interrupts.check()
            interrupts.acknowledge()
            SignalOnDelete(error=ValueError("not a signal"))  # other errors still reach the hook
    finally:
        sys.unraisablehook = previous
    assert [type(u.exc_value) for u in seen] == [ValueError]
    assert sys.unraisablehook is previous  # handled() put it back
