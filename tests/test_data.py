"""Data modules on real Fashion-MNIST, on small IDX files written here, and offline sets."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from helpers import DEBIAN_COPY, needs_fashion_mnist, write_mnist_like
from hydra.utils import instantiate

from lightsweep.data import IDXImageDataModule, TensorBatches
from lightsweep.errors import LightsweepError


@pytest.fixture(scope="module")
def fashion_root(tmp_path_factory) -> Path:
    """A fresh data root: the module decompresses Debian's copy into it (and checks the md5s)."""
    return tmp_path_factory.mktemp("data")


@needs_fashion_mnist
def test_fashion_mnist_real_split(make_cfg, fashion_root):
    cfg = make_cfg(f"data.root={fashion_root}")
    dm = instantiate(cfg.data)
    dm.setup("fit")
    assert (fashion_root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = (dm.tensors[s] for s in ("train", "val", "test"))
    assert (len(train_x), len(val_x), len(test_x)) == (55000, 5000, 10000)
    assert train_x.shape[1] == 784 and train_x.dtype == torch.float32
    # Stratified: 500 of each class in validation; normalised with training-split statistics.
    assert torch.bincount(val_y, minlength=10).tolist() == [500] * 10
    assert abs(train_x.mean().item()) < 1e-3 and abs(train_x.std().item() - 1) < 1e-3
    assert dm.mean == pytest.approx(0.2860, abs=2e-3) and dm.std == pytest.approx(0.3530, abs=2e-3)
    assert torch.bincount(test_y).tolist() == [1000] * 10

    # The split is reproducible and independent of the training seed.
    other = instantiate(make_cfg(f"data.root={fashion_root}", "seed=7").data)
    other.setup("fit")
    assert torch.equal(other.tensors["val"][1], val_y) and torch.equal(other.tensors["val"][0], val_x)


@needs_fashion_mnist
def test_fashion_mnist_binary_tasks(make_cfg, fashion_root):
    dm = instantiate(
        make_cfg(f"data.root={fashion_root}", "data.classes=[T-shirt/top,Shirt]", "data.val_size=1000").data
    )
    dm.setup("fit")
    assert dm.class_names == ["T-shirt/top", "Shirt"]
    y = torch.cat([dm.tensors[s][1] for s in ("train", "val")])
    assert len(y) == 12000 and torch.bincount(y).tolist() == [6000, 6000]

    dm = instantiate(make_cfg(f"data.root={fashion_root}", "data.positive_class=Bag").data)
    dm.setup("fit")
    assert dm.class_names == ["not Bag", "Bag"]
    assert torch.bincount(dm.tensors["test"][1]).tolist() == [9000, 1000]


def test_mnist_from_written_idx_files(make_cfg, tmp_path):
    root = tmp_path / "data"
    write_mnist_like(root / "MNIST" / "raw", n_train=200, n_test=50)
    dm = instantiate(make_cfg("data=mnist", f"data.root={root}", "data.val_size=50", "data.local_copies=[]").data)
    dm.setup("fit")
    assert [len(dm.tensors[s][0]) for s in ("train", "val", "test")] == [150, 50, 50]
    assert torch.bincount(dm.tensors["val"][1]).tolist() == [5] * 10
    # Class k was written as pixel value ~20k: the decoded order of labels and images matches.
    raw = (dm.tensors["test"][0] * dm.std + dm.mean) * 255
    assert torch.allclose(raw.mean(dim=1), dm.tensors["test"][1].float() * 20 + 9.5, atol=2)


def test_mnist_from_gzip_local_copy(make_cfg, tmp_path):
    copy = tmp_path / "copy"
    write_mnist_like(copy, n_train=100, n_test=30, compress=True)
    root = tmp_path / "data"
    dm = instantiate(
        make_cfg("data=mnist", f"data.root={root}", f"data.local_copies=[{copy}]", "data.val_size=20").data
    )
    dm.setup("fit")
    assert (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").is_file()
    assert len(dm.tensors["test"][0]) == 30


def test_missing_dataset_names_the_three_fixes(make_cfg, tmp_path):
    dm = instantiate(make_cfg(f"data.root={tmp_path / 'empty'}", "data.local_copies=[]").data)
    with pytest.raises(LightsweepError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert "make setup" in message and "data.download=true" in message and "raw" in message
    assert "\n" not in message


def test_truncated_idx_file_is_refused(make_cfg, tmp_path):
    raw = tmp_path / "data" / "MNIST" / "raw"
    write_mnist_like(raw, n_train=100, n_test=30)
    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-500])
    dm = instantiate(make_cfg("data=mnist", f"data.root={tmp_path / 'data'}", "data.local_copies=[]").data)
    with pytest.raises(LightsweepError, match="truncated or corrupt"):
        dm.setup("fit")


def test_truncated_gzip_copy_is_refused_and_leaves_nothing(make_cfg, tmp_path):
    copy = tmp_path / "copy"
    write_mnist_like(copy, compress=True)
    gz = copy / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:200])
    root = tmp_path / "data"
    dm = instantiate(make_cfg("data=mnist", f"data.root={root}", f"data.local_copies=[{copy}]").data)
    with pytest.raises(LightsweepError, match="truncated or corrupt"):
        dm.setup("fit")
    assert not (root / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()
    assert not [p for p in (root / "MNIST" / "raw").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("where", ["header", "middle"])
def test_corrupt_gzip_copy_is_refused_and_leaves_nothing(make_cfg, tmp_path, where):
    copy = tmp_path / "copy"
    write_mnist_like(copy, compress=True)
    gz = copy / "train-images-idx3-ubyte.gz"
    content = bytearray(gz.read_bytes())
    start = 0 if where == "header" else len(content) // 2  # not gzip at all / a damaged stream
    content[start : start + 64] = bytes(range(64))
    gz.write_bytes(bytes(content))
    root = tmp_path / "data"
    dm = instantiate(make_cfg("data=mnist", f"data.root={root}", f"data.local_copies=[{copy}]").data)
    with pytest.raises(LightsweepError, match="train-images-idx3-ubyte.gz .*truncated or corrupt"):
        dm.setup("fit")
    assert not (root / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()
    assert not [p for p in (root / "MNIST" / "raw").iterdir() if p.name.startswith(".")]


@needs_fashion_mnist
def test_foreign_file_fails_the_checksum(make_cfg, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(DEBIAN_COPY, copy)
    write_mnist_like(tmp_path / "foreign", compress=True)
    shutil.copy(tmp_path / "foreign" / "t10k-labels-idx1-ubyte.gz", copy / "t10k-labels-idx1-ubyte.gz")
    dm = IDXImageDataModule(root=tmp_path / "data", local_copies=[copy], class_names=list("0123456789"))
    with pytest.raises(LightsweepError, match="checksum mismatch"):
        dm.prepare_data()


@needs_fashion_mnist
def test_raw_files_are_rehashed_only_when_they_change(tmp_path, monkeypatch):
    """A file that passed keeps passing without a re-hash while its size, mtime and inode stay; a
    same-size rewrite is hashed again and refused."""
    from torchvision.datasets import utils

    dm = IDXImageDataModule(root=tmp_path / "data", local_copies=[DEBIAN_COPY], class_names=list("0123456789"))
    dm.prepare_data()  # decompresses and checks the Debian copy
    hashed = []
    real_md5 = utils.check_md5
    monkeypatch.setattr(utils, "check_md5", lambda path, md5: hashed.append(Path(path).name) or real_md5(path, md5))
    dm.prepare_data()
    assert len(hashed) == 4  # first check of files already in raw/
    dm.prepare_data()
    assert len(hashed) == 4  # unchanged: the stamps answer
    images = dm.raw_dir / "t10k-images-idx3-ubyte"
    content = bytearray(images.read_bytes())
    content[5000:5100] = bytes(100)  # same size, other pixels
    images.write_bytes(bytes(content))
    with pytest.raises(LightsweepError, match="t10k-images-idx3-ubyte is corrupt"):
        dm.prepare_data()
    assert hashed[4:] == ["t10k-images-idx3-ubyte"]


def test_digits_and_xor_need_nothing_installed(make_cfg):
    digits = instantiate(make_cfg("data=digits").data)
    digits.setup("fit")
    assert sum(len(digits.tensors[s][0]) for s in ("train", "val", "test")) == 1797
    assert digits.tensors["train"][0].shape[1] == 64

    xor = instantiate(make_cfg("data=xor").data)
    xor.setup("fit")
    x, y = xor.tensors["test"]
    assert x.shape[1] == 2 and set(y.tolist()) == {0, 1}
    again = instantiate(make_cfg("data=xor", "seed=3").data)
    again.setup("fit")
    assert torch.equal(again.tensors["test"][0], x)  # the data set is fixed by split_seed


def test_tensor_batches_cover_each_sample_once_per_epoch():
    x = torch.arange(103).float()[:, None]
    y = torch.arange(103)
    batches = TensorBatches(x, y, 10, shuffle=True, seed=1)
    assert len(batches) == 11
    epoch0 = torch.cat([b[1] for b in batches])
    assert sorted(epoch0.tolist()) == list(range(103))
    batches.set_epoch(1)
    epoch1 = torch.cat([b[1] for b in batches])
    assert not torch.equal(epoch0, epoch1)
    batches.set_epoch(0)
    assert torch.equal(torch.cat([b[1] for b in batches]), epoch0)  # order depends on the epoch only


def test_tensor_batches_shard_evenly_across_ranks():
    x = torch.arange(25).float()[:, None]
    y = torch.arange(25)
    shards = [TensorBatches(x, y, 4, shuffle=True, seed=0, rank=r, world_size=3) for r in range(3)]
    seen = [torch.cat([b[1] for b in shard]) for shard in shards]
    assert len({len(s) for s in seen}) == 1 and len({len(s) for s in shards}) == 1
    assert set(torch.cat(seen).tolist()) == set(range(25))
    assert sum(len(s) for s in seen) == 27  # padded by 2 like DistributedSampler
