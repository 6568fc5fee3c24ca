"""Shared fixtures: compose the real configs with fast overrides; real MLflow stores in tmp_path."""

from __future__ import annotations

import pytest
from helpers import FAST, compose_config
from hydra.core.global_hydra import GlobalHydra


@pytest.fixture
def make_cfg(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    def make(*overrides: str, fast: bool = True):
        return compose_config([*(FAST if fast else []), *overrides], tmp_path)

    yield make
    GlobalHydra.instance().clear()
