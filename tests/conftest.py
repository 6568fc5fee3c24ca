"""Shared fixtures: compose the real configs with fast overrides; real MLflow stores in tmp_path."""

from __future__ import annotations

import pytest
import torch
from helpers import FAST, compose_config, seed_store
from hydra.core.global_hydra import GlobalHydra

# The tests train tiny models: one torch CPU thread each (helpers.cli_env sets the same for the CLI's
# processes). A second thread only adds a hand-off to every small op, and on a machine whose cores are
# busy each hand-off waits for a core: a few-second run takes four times as long.
torch.set_num_threads(1)


@pytest.fixture
def make_cfg(tmp_path, monkeypatch):
    """The config of `python train.py <FAST> <overrides>`, outputs in tmp_path/out, its store (an empty
    one to start from: helpers.seed_store) tmp_path/mlruns/mlflow.db."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    seed_store(tmp_path / "mlruns" / "mlflow.db")

    def make(*overrides: str, fast: bool = True):
        return compose_config([*(FAST if fast else []), *overrides], tmp_path)

    yield make
    GlobalHydra.instance().clear()


@pytest.fixture
def hydra_version_base_of_a_fresh_process():
    """Hydra's suites run apps that set no version base, and expect what a fresh process assumes then
    (1.1: a job changes into its output dir). Hydra keeps the version base in a singleton, and the
    other tests' `compose(version_base="1.3")` left 1.3 there: use 1.1 for these tests, then put it back."""
    from hydra.version import VersionBase
    from packaging.version import Version

    base = VersionBase.instance()
    saved = base.getbase()
    base.setbase(Version("1.1"))
    yield
    if isinstance(saved, Version):
        base.setbase(saved)
