"""Fashion-MNIST and MNIST from their IDX files, parsed by torchvision's dataset classes.

Where the files are looked for, in order:
1. `root/<Dataset>/raw/` (torchvision's layout; uncompressed files),
2. local gzip copies such as Debian's `dataset-fashion-mnist` (`/usr/share/datasets/fashion-mnist/`),
   decompressed once into `root/<Dataset>/raw/` and checked against the known content checksums
   (Debian recompressed the `.gz` files, so only the uncompressed content can be compared),
3. torchvision's own download, only when `download=true` (needs the internet).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zlib
from pathlib import Path

from lightsweep.data.base import InMemoryDataModule, RawFormat, Splits
from lightsweep.errors import LightsweepError

# md5 of the *uncompressed* official files.
KNOWN_MD5 = {
    "FashionMNIST": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
    # MNIST has no offline copy here to measure; its files are checked by the IDX parser's size checks.
    "MNIST": {},
}
FILES = list(KNOWN_MD5["FashionMNIST"])


def _decompress_verified(source: Path, target: Path, expected_md5: str | None) -> None:
    """gunzip `source` to `target` atomically; a corrupt or foreign file never lands in `target`.
    torchvision decompresses and checks the md5; the private folder + rename make it all-or-nothing."""
    from torchvision.datasets.utils import check_integrity, extract_archive

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        plain = Path(extract_archive(str(source), str(staging)))
        if not check_integrity(plain, expected_md5):
            raise LightsweepError(
                f"{source} does not hold the official {target.name} (checksum mismatch): "
                "reinstall it (apt-get install --reinstall dataset-fashion-mnist) or remove it"
            )
        os.replace(plain, target)
    except (OSError, EOFError, zlib.error) as err:
        raise LightsweepError(
            f"cannot decompress {source} ({err}): the file is truncated or corrupt; "
            "reinstall it or delete it and rerun setup"
        ) from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class IDXImageDataModule(InMemoryDataModule):
    """Fashion-MNIST / MNIST: official 60k/10k files; validation carved from the 60k."""

    def __init__(self, dataset="FashionMNIST", root="data", local_copies=(), download=False, **kwargs):
        super().__init__(**kwargs)
        if dataset not in KNOWN_MD5:
            raise LightsweepError(f"data.dataset must be one of {sorted(KNOWN_MD5)}, got {dataset!r}")
        self.dataset = dataset
        self.root = Path(root)
        self.local_copies = [Path(p) for p in local_copies or ()]
        self.download = download

    @property
    def raw_dir(self) -> Path:
        return self.root / self.dataset / "raw"

    def raw_format(self) -> RawFormat:
        """IDX pixels: uint8 images, divided by 255 before normalising."""
        return RawFormat("uint8", tuple(int(d) for d in self.image_shape), 255.0)

    def source(self) -> tuple[str, dict]:
        """The IDX files it was read from."""
        return "local", {"uri": Path(self.raw_dir).resolve().as_uri()}

    def _find_local_copy(self) -> Path | None:
        for folder in self.local_copies:
            if all((folder / f"{name}.gz").is_file() or (folder / name).is_file() for name in FILES):
                return folder
        return None

    def prepare_data(self) -> None:
        """Make sure the four uncompressed IDX files exist in `root/<Dataset>/raw/`."""
        missing = [name for name in FILES if not (self.raw_dir / name).is_file()]
        if not missing:
            self._verify_raw()
            return
        copy = self._find_local_copy()
        if copy is not None:
            for name in missing:
                plain = copy / name
                if plain.is_file():
                    shutil.copyfile(plain, self.raw_dir / name)
                else:
                    _decompress_verified(copy / f"{name}.gz", self.raw_dir / name, KNOWN_MD5[self.dataset].get(name))
            return
        if self.download:
            from torchvision import datasets

            try:
                getattr(datasets, self.dataset)(str(self.root), download=True)
            except Exception as err:  # network errors come in many types
                raise LightsweepError(
                    f"downloading {self.dataset} failed ({type(err).__name__}: {err}); copy the IDX "
                    f"files into {self.raw_dir} instead"
                ) from err
            return
        searched = ", ".join(str(p) for p in [self.raw_dir, *self.local_copies])
        setup_hint = (
            "run `make setup` (installs Debian's dataset-fashion-mnist)"
            if self.dataset == "FashionMNIST"
            else "run `make setup`"
        )
        raise LightsweepError(
            f"{self.dataset} not found (looked in {searched}). Fix: {setup_hint}, or copy the four "
            f"IDX files into {self.raw_dir}, or pass data.download=true when online"
        )

    def _verify_raw(self) -> None:
        """Files already in `raw/` may have been damaged since: check the content checksums (~0.1 s),
        unless a file is unchanged (size, modification time, inode) since it last passed."""
        from torchvision.datasets.utils import check_md5

        stamp_path = self.raw_dir / ".verified.json"
        try:
            stamps = json.loads(stamp_path.read_text())
        except (OSError, ValueError):
            stamps = {}
        fresh = {}
        for name, expected in KNOWN_MD5[self.dataset].items():
            path = self.raw_dir / name
            info = path.stat()
            stamp = [info.st_size, info.st_mtime_ns, info.st_ino, expected]
            if stamps.get(name) != stamp and not check_md5(path, expected):
                raise LightsweepError(
                    f"{path} is corrupt (checksum mismatch): delete {self.raw_dir} and rerun; "
                    "it is re-created from the local copy"
                )
            fresh[name] = stamp
        if fresh != stamps:
            fd, tmp_name = tempfile.mkstemp(dir=self.raw_dir, prefix=".verified.")
            with os.fdopen(fd, "w") as fh:
                json.dump(fresh, fh)
            os.replace(tmp_name, stamp_path)  # parallel jobs may race here; each writes the same thing

    def _read(self, train: bool):
        from torchvision import datasets

        try:
            ds = getattr(datasets, self.dataset)(str(self.root), train=train, download=False)
        except (RuntimeError, AssertionError, ValueError, OSError) as err:
            raise LightsweepError(
                f"cannot read {self.dataset} from {self.raw_dir} ({type(err).__name__}: {err}): "
                f"the files are truncated or corrupt; delete {self.raw_dir} and rerun"
            ) from err
        images, labels = ds.data, ds.targets
        if images.ndim != 3 or len(images) != len(labels) or len(images) == 0:
            raise LightsweepError(
                f"{self.raw_dir} holds inconsistent files ({tuple(images.shape)} images, "
                f"{len(labels)} labels): delete {self.raw_dir} and rerun"
            )
        if int(labels.max()) >= len(self.all_class_names) or int(labels.min()) < 0:
            raise LightsweepError(
                f"{self.raw_dir} has labels outside 0..{len(self.all_class_names) - 1}: delete it and rerun"
            )
        return images, labels

    def load_splits(self) -> Splits:
        self.prepare_data()  # no-op when the files are there; keeps `setup()` self-sufficient
        train_x, train_y = self._read(train=True)
        test_x, test_y = self._read(train=False)
        # Pixels in [0, 1] (as torchvision's ToTensor), so the statistics read like the usual ones;
        # divided after the split (scale), so the whole uint8 set is never copied as floats.
        return Splits(train_x, train_y, test_x, test_y, scale=255)
