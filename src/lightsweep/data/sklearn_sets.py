"""Datasets that need nothing installed: scikit-learn's bundled digits and a seeded noisy XOR."""

from __future__ import annotations

import torch

from lightsweep.data.base import InMemoryDataModule, Splits, stratified_split


def _hold_out_test(x, y, test_size: float, seed: int) -> Splits:
    train_idx, test_idx = stratified_split(y, round(test_size * len(y)), seed)
    return Splits(x[train_idx], y[train_idx], x[test_idx], y[test_idx])


class DigitsDataModule(InMemoryDataModule):
    """scikit-learn's 8x8 handwritten digits (1797 images, 10 classes, pixel values 0..16)."""

    def __init__(self, test_size=0.2, **kwargs):
        super().__init__(**kwargs)
        self.test_size = test_size

    def load_splits(self) -> Splits:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = torch.as_tensor(bunch.images, dtype=torch.float32) / 16  # pixel values 0..16
        y = torch.as_tensor(bunch.target, dtype=torch.long)
        return _hold_out_test(x, y, self.test_size, self.split_seed)


def make_xor(num_samples: int, noise: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points around the four corners (+-1, +-1); label 1 where the coordinates differ in sign."""
    generator = torch.Generator().manual_seed(seed)
    # Exactly balanced corners: with unequal blobs a line can win by isolating the largest one.
    corner_ids = (torch.arange(num_samples) % 4)[torch.randperm(num_samples, generator=generator)]
    corners = torch.stack([corner_ids // 2, corner_ids % 2], dim=1)
    x = (corners * 2 - 1).float() + noise * torch.randn(num_samples, 2, generator=generator)
    y = (corners[:, 0] != corners[:, 1]).long()
    return x, y


class XORDataModule(InMemoryDataModule):
    def __init__(self, num_samples=2000, noise=0.25, test_size=0.2, **kwargs):
        super().__init__(**kwargs)
        self.num_samples, self.noise, self.test_size = num_samples, noise, test_size

    def load_splits(self) -> Splits:
        x, y = make_xor(self.num_samples, self.noise, self.split_seed)
        return _hold_out_test(x, y, self.test_size, self.split_seed)
