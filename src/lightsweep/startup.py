"""The cyclic garbage collector is paused while a command imports its libraries.

Importing torch, Lightning (with torchmetrics, torchvision, scipy) and MLflow creates ~700k
long-lived objects, and the collector, triggered by the allocations, walks them again and again:
measured here, the imports take ~6 s with it and ~4 s without. Those objects live as long as the
process, so once they are in they are frozen (`gc.freeze`: out of the collector's sight, so later
collections stay cheap) and the collector resumes. Only the CLI pauses it; `train(cfg)` called
from Python leaves the collector alone.
"""

from __future__ import annotations

import gc

_paused = False


def pause_gc() -> None:
    """Called first thing by the CLI: no collections during the imports and set-up that follow."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume_gc() -> None:
    """Freeze what the imports created and collect again; a no-op unless `pause_gc` paused it.

    Called once the libraries are in and before a run builds its data, model and trainer (those
    are not frozen: a sweep's later jobs must be able to free an earlier job's), and by a sweep's
    launching process once its own start-up is done.
    """
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()
