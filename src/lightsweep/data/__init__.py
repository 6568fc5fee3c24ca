"""LightningDataModules that decode a whole dataset once into in-memory tensors."""

from lightsweep.data.base import InMemoryDataModule, TensorBatches
from lightsweep.data.idx import IDXImageDataModule
from lightsweep.data.synthetic import DigitsDataModule, XORDataModule

__all__ = [
    "DigitsDataModule",
    "IDXImageDataModule",
    "InMemoryDataModule",
    "TensorBatches",
    "XORDataModule",
]
