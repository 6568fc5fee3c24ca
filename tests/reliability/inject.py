"""Fault injection through the config, as a user adds any callback: `+callbacks.fail._target_=inject.FailAt`.

`FailAt(hook)` raises a RuntimeError (a bug, not a LightsweepError) from a Lightning hook (`setup`,
`on_train_batch_end`, `on_fit_end`, `on_test_end`, ...), or from its own constructor
(`hook=__init__`, while lightsweep instantiates the callbacks). With `value` and `when`, it raises
only where they are equal: `+callbacks.fail.value=${optimizer.lr} +callbacks.fail.when=0.2` fails the
one job of a sweep that trains with lr=0.2. Used to prove that no run is left RUNNING whatever raises.

Importable as `inject` in-process (pytest puts tests/reliability on sys.path) and in a CLI
subprocess with `PYTHONPATH` (see `FAIL_ENV`).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl

FAIL_ENV = {"PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))}


def fail_at(hook: str, name: str = "fail", **when) -> list[str]:
    """The overrides that add a `FailAt(hook)` callback named `name` (`value=..., when=...` optional)."""
    return [
        f"+callbacks.{name}._target_=inject.FailAt",
        f"+callbacks.{name}.hook={hook}",
        *(f"+callbacks.{name}.{k}={v}" for k, v in when.items()),
    ]


class FailAt(pl.Callback):
    def __init__(self, hook: str, value=None, when=None):
        self.hook, self.armed = hook, value == when
        if hook == "__init__":
            self._raise()
        setattr(self, hook, self._raise)  # an instance attribute: Lightning calls it instead of the no-op

    def _raise(self, *_, **__):
        if self.armed:
            raise RuntimeError(f"injected failure in {self.hook}")
