"""Test helpers: compose the real configs with fast overrides, write IDX files, find runs."""

from __future__ import annotations

import gzip
import struct
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

import lightsweep.config  # noqa: F401  (registers the resolvers used by conf/)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
PYTHON = sys.executable

# A few batches of everything: seconds per run, every code path exercised.
FAST = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=8",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.log_every_n_steps=2",
    "trainer.enable_progress_bar=false",
    "callbacks.progress_bar=null",
    "callbacks.model_summary=null",
]


def compose_config(overrides: list[str], tmp_path: Path | None = None):
    """The config `python train.py <overrides>` would get, with outputs and store in tmp_path."""
    extra = []
    if tmp_path is not None:
        extra = [f"paths.output_dir={tmp_path / 'out'}", f"paths.mlruns_dir={tmp_path / 'mlruns'}"]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*overrides, *extra], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def tracking_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


def write_idx(path: Path, array: torch.Tensor, compress: bool = False) -> None:
    """Write an IDX file (the MNIST format): magic, dims, big-endian uint8 payload."""
    dims = tuple(array.shape)
    header = struct.pack(">I", 0x0800 + len(dims)) + b"".join(struct.pack(">I", d) for d in dims)
    payload = header + array.to(torch.uint8).numpy().tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)


def write_mnist_like(folder: Path, n_train=60, n_test=20, compress=False, seed=0) -> None:
    """Tiny MNIST-format files: class k images are filled with value 20*k plus noise."""
    generator = torch.Generator().manual_seed(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = torch.arange(n) % 10
        images = (labels[:, None, None] * 20 + torch.randint(0, 20, (n, 28, 28), generator=generator)).clamp(0, 255)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, compress)


def artifact_paths(client, run_id: str, path: str | None = None) -> set[str]:
    """Every artifact file of a run, as relative paths."""
    out: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return out
