"""A DDP process's process group, destroyed when the process exits, while Python can still run its threads."""

from __future__ import annotations

import atexit

import pytorch_lightning as pl

_registered = False


class ProcessGroupExit(pl.Callback):
    """Destroys the default process group when a process that joined one exits (`atexit`).

    Lightning does that for NCCL only; with gloo (DDP on CPU) the group and its C++ threads live on
    into Python's finalization. A gloo worker thread lets go of a finished collective a moment after
    it woke the caller; if the caller has dropped the collective's tensors meanwhile (torchmetrics'
    all_gather buffers), freeing them takes the GIL. During finalization taking the GIL ends the
    thread (pthread_exit), and unwinding through the C++ destructor aborts the process: "terminate
    called without an active exception", SIGABRT. CI saw it in rank 1 of a `ddp_spawn` test: after
    the test metrics' last all_gather rank 1 has nothing left to do and exits at once, while rank 0
    draws plots and uploads them (busy CPUs delay the gloo thread). Destroying the group at exit
    joins its threads while the interpreter is still whole.
    """

    def setup(self, trainer, pl_module, stage):
        destroy_process_group_at_exit()


def destroy_process_group_at_exit() -> None:
    """Once per process that has a default process group: destroy it at exit (before finalization)."""
    import torch.distributed as dist

    global _registered
    if _registered or not (dist.is_available() and dist.is_initialized()):
        return
    atexit.register(_destroy)
    _registered = True


def _destroy() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
