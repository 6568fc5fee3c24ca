"""The four commands share one entry (lightsweep.entry): `python train.py`, `evaluate.py`,
`pipelines/register.py` and `pipelines/compare.py` refuse a problem the user can fix in one line with
exit 2, keep the traceback with HYDRA_FULL_ERROR=1, and exit 130/143 on Ctrl-C/SIGTERM.

In process: each command's `run()` parses sys.argv, composes its config and calls its task as its
script does (helpers.command_run; the subprocess contract of `python train.py` is
tests/reliability/test_bad_input.py's).
"""

from __future__ import annotations

import os
import signal
import sys

import pytest
from helpers import command_run
from hydra.core.global_hydra import GlobalHydra

from lightsweep.errors import LightsweepError

# (script, overrides that make it refuse, what the one line says)
REFUSALS = [
    ("train.py", ["optimizer.lr=-1"], "optimizer.lr must be > 0"),
    ("evaluate.py", [], "which model? pass model_uri="),
    ("pipelines/register.py", ["sweep=latest", "run=abc"], "pass either sweep= or run=, not both"),
    ("pipelines/compare.py", ["sweep=0123456789abcdef"], "sweep=0123456789abcdef: no such MLflow run"),
]


@pytest.fixture
def command_line(tmp_path, monkeypatch):
    """Run a command as `python <script> <overrides>` would, in this process; store and outputs in tmp_path."""
    from lightsweep import startup

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/store/mlflow.db")
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(startup, "pause_gc", lambda: None)  # (train.py's; tested in test_lightning_contract)

    def run(script: str, *overrides: str):
        monkeypatch.setattr(sys, "argv", [script, f"paths.log_dir={tmp_path}/outputs", *overrides])
        GlobalHydra.instance().clear()
        try:
            command_run(script)()
        finally:
            GlobalHydra.instance().clear()

    return run


@pytest.mark.parametrize("script, overrides, needle", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_a_refusal_is_one_line_and_exit_2(command_line, capsys, script, overrides, needle):
    from lightsweep.tracking.store import open_store

    open_store(os.environ["MLFLOW_TRACKING_URI"])  # (a new store's creation is logged by MLflow)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        command_line(script, *overrides)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    (line,) = err.strip().splitlines()
    assert line.startswith("error: ") and needle in line, err


@pytest.mark.parametrize("script, overrides, needle", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_hydra_full_error_keeps_the_traceback(command_line, monkeypatch, script, overrides, needle):
    """With HYDRA_FULL_ERROR=1 the error goes up whole (Hydra prints its traceback)."""
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(LightsweepError, match=needle.replace("?", r"\?")) as info:
        command_line(script, *overrides)
    assert info.traceback  # raised where it happened, not printed and swallowed


@pytest.mark.parametrize("signal_name, code", [("SIGINT", 130), ("SIGTERM", 143)])
@pytest.mark.parametrize("script", ["train.py", "evaluate.py", "pipelines/register.py", "pipelines/compare.py"])
def test_a_signal_exits_130_or_143(command_line, monkeypatch, capsys, script, signal_name, code):
    """The signal comes while the command opens its store (train.py: while it trains)."""
    import lightsweep.train
    from lightsweep.tracking import store

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), getattr(signal, signal_name))
        raise AssertionError("the signal was not raised")

    monkeypatch.setattr(store, "open_store", signalled)
    monkeypatch.setattr(lightsweep.train, "train", signalled)
    before = signal.getsignal(signal.SIGINT)  # (SIG_IGN where pytest itself runs in the background)
    with pytest.raises(SystemExit) as exit_info:
        command_line(script, *(["model_uri=models:/nothing@champion"] if script == "evaluate.py" else []))
    assert exit_info.value.code == code
    assert f"interrupted ({signal_name})" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is before  # the handlers are put back
