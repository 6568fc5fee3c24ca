"""Lightning's DDP in a form that works inside Hydra multiruns (`trainer=ddp_cpu`, `trainer=ddp`).

Lightning's default `ddp` starts the extra processes by re-running the command line
(`python train.py -m ...` with LOCAL_RANK=1): inside a Hydra multirun every extra process runs a
whole second sweep, with its own parent run, sweep dir and jobs. With `start_method="spawn"`
(Lightning's `ddp_spawn`) the workers receive the job's trainer and model instead, so a job stays one
job in any launcher. Spawned workers only hand back the weights and `callback_metrics`; this strategy
also hands back the callbacks' state (what a checkpoint would carry: the epoch history and test
confusion matrix used for the plots, the best checkpoint's path and score) and, after `trainer.test`,
the tested checkpoint's weights, and the fit loop's epoch/step counters. So the code after
`fit`/`test` sees what a single process would.

Where a cluster starts one process per device itself (SLURM with `tasks_per_node` = devices,
torchrun), nothing is spawned: each process runs its rank, as with Lightning's `ddp`.
"""

from __future__ import annotations

import io
from typing import Any

import torch
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.strategies.launchers.multiprocessing import _MultiProcessingLauncher
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from pytorch_lightning.trainer.states import TrainerFn

_STATES = "lightsweep_callback_states"
_FIT_LOOP = "lightsweep_fit_loop"
_TESTED = "lightsweep_tested_checkpoint"


class SpawnDDPStrategy(DDPStrategy):
    """DDP with spawned workers (or the cluster's processes) that return the callbacks' state."""

    def __init__(self, start_method: str = "spawn", **kwargs: Any) -> None:
        super().__init__(start_method=start_method, **kwargs)

    def _configure_launcher(self) -> None:
        if self.cluster_environment is not None and self.cluster_environment.creates_processes_externally:
            # SLURM/torchrun started every rank: this launcher starts nothing and runs this rank.
            self._launcher = _SubprocessScriptLauncher(self.cluster_environment, self.num_processes, self.num_nodes)
        else:
            self._launcher = _StatefulSpawnLauncher(self, start_method=self._start_method)


class _StatefulSpawnLauncher(_MultiProcessingLauncher):
    """Lightning's spawn launcher, through its hooks for extra results from rank 0
    (`get_extra_results` in the worker, `update_main_process_results` in the main process)."""

    def get_extra_results(self, trainer) -> dict[str, Any]:
        extra = super().get_extra_results(trainer)
        states = {cb.state_key: cb.state_dict() for cb in trainer.callbacks}
        extra[_STATES] = _to_bytes({k: v for k, v in states.items() if v})
        if trainer.state.fn == TrainerFn.FITTING:
            # Epoch and step counters: test metrics are then logged at the step a single process uses.
            extra[_FIT_LOOP] = _to_bytes(trainer.fit_loop.state_dict())
        if trainer.state.fn == TrainerFn.TESTING and trainer.ckpt_path:
            extra[_TESTED] = str(trainer.ckpt_path)
        return extra

    def update_main_process_results(self, trainer, extra: dict[str, Any]) -> None:
        super().update_main_process_results(trainer, extra)
        states = torch.load(io.BytesIO(extra[_STATES]), weights_only=True)
        for callback in trainer.callbacks:
            if callback.state_key in states:
                callback.load_state_dict(states[callback.state_key])
        if _FIT_LOOP in extra:
            trainer.fit_loop.load_state_dict(torch.load(io.BytesIO(extra[_FIT_LOOP]), weights_only=True))
        if tested := extra.get(_TESTED):
            # A single process keeps the tested (best) weights in the module after trainer.test.
            checkpoint = self._strategy.checkpoint_io.load_checkpoint(tested)
            trainer.lightning_module.load_state_dict(checkpoint["state_dict"], strict=False)


def _to_bytes(value) -> bytes:
    # As Lightning does for callback_metrics: tensors as bytes, not shared memory between processes.
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()
