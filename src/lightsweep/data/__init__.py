"""LightningDataModules that decode a whole dataset once into in-memory tensors."""

from lightsweep.data.base import InMemoryDataModule, TensorBatches
from lightsweep.data.idx import IDXImageDataModule
from lightsweep.data.sklearn_sets import SklearnDataModule, make_xor

__all__ = [
    "IDXImageDataModule",
    "InMemoryDataModule",
    "SklearnDataModule",
    "TensorBatches",
    "make_xor",
]
