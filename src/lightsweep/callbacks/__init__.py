"""Lightning callbacks (`pytorch_lightning.Callback`) that lightsweep adds to runs.

The once-per-sweep work is Hydra's side: `lightsweep.sweeps.hydra_callbacks`.
"""

from lightsweep.callbacks.artifacts import RunArtifacts
from lightsweep.callbacks.distributed import ProcessGroupExit
from lightsweep.callbacks.history import EpochHistory, RandomState
from lightsweep.callbacks.interrupts import InterruptCheckpoint, SignalCheck
from lightsweep.callbacks.pruning import OptunaPruning
from lightsweep.callbacks.requeue import RequeueAtEpochStart
from lightsweep.callbacks.schedulefree import OptimizerModes
from lightsweep.callbacks.timing import StepTimer

__all__ = [
    "EpochHistory",
    "InterruptCheckpoint",
    "OptimizerModes",
    "OptunaPruning",
    "ProcessGroupExit",
    "RandomState",
    "RequeueAtEpochStart",
    "RunArtifacts",
    "SignalCheck",
    "StepTimer",
]
