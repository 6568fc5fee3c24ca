"""Small sets that need nothing installed: scikit-learn's bundled ones (digits, iris, wine,
breast_cancer), its seeded 2-D generators (moons, circles) and a seeded noisy XOR, all through
one DataModule whose `loader` (a function returning (X, y)) is chosen in conf/data/<set>.yaml.
"""

from __future__ import annotations

import torch

from lightsweep.data.base import InMemoryDataModule, Splits, stratified_split
from lightsweep.errors import LightsweepError


def make_xor(n_samples: int = 2000, noise: float = 0.25, random_state: int = 0):
    """Points around the four corners (+-1, +-1); label 1 where the coordinates differ in sign.
    The signature of scikit-learn's make_moons, so the same DataModule serves it."""
    generator = torch.Generator().manual_seed(random_state)
    # Exactly balanced corners: with unequal blobs a line can win by isolating the largest one.
    corner_ids = (torch.arange(n_samples) % 4)[torch.randperm(n_samples, generator=generator)]
    corners = torch.stack([corner_ids // 2, corner_ids % 2], dim=1)
    x = (corners * 2 - 1).float() + noise * torch.randn(n_samples, 2, generator=generator)
    y = (corners[:, 0] != corners[:, 1]).long()
    return x, y


class SklearnDataModule(InMemoryDataModule):
    """(X, y) from `loader()` (e.g. sklearn.datasets.load_iris with return_X_y=True), a seeded
    stratified test split of `test_size`, then the base class's validation split."""

    def __init__(self, loader, test_size=0.2, **kwargs):
        super().__init__(**kwargs)
        self.loader, self.test_size = loader, test_size

    def source(self) -> tuple[str, dict]:
        """The code that made the data: the loader and its arguments (`sklearn.datasets.make_moons(noise=0.2, ...)`)."""
        func = getattr(self.loader, "func", self.loader)
        kwargs = ", ".join(f"{k}={v!r}" for k, v in sorted(getattr(self.loader, "keywords", {}).items()))
        name = f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', repr(func))}({kwargs})"
        return "code", {"tags": {"mlflow.source.name": name}}

    def load_splits(self) -> Splits:
        try:
            x, y = self.loader()
        except (TypeError, ValueError) as err:  # scikit-learn checks its own arguments (noise >= 0, ...)
            name = getattr(getattr(self.loader, "func", self.loader), "__name__", "the loader")
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise LightsweepError(f"{name} rejected its arguments ({reason}): fix the data.loader.* overrides") from err
        x, y = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
        train_idx, test_idx = stratified_split(y, self.test_size, self.split_seed, "data.test_size")
        return Splits(x[train_idx], y[train_idx], x[test_idx], y[test_idx])
