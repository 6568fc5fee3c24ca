"""Helpers for the team tests: real PostgreSQL, real MLflow servers, real Chromium.

Those tests skip, with the reason, where a binary is missing on a developer's machine; in CI
(CI=true, where scripts/setup.sh installs them) a missing binary fails the test instead.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import ROOT

IN_CI = os.environ.get("CI", "").lower() == "true"
SERVER_SCRIPT = ROOT / "scripts" / "mlflow_server.sh"
UI_DRIVER = ROOT / "tests" / "ui" / "mlflow_ui.mjs"
ARTIFACTS = ROOT / "test-artifacts"  # screenshots and logs a reviewer opens (git-ignored)


def require(available: bool, what: str, fix: str = "make team-deps") -> None:
    if available:
        return
    message = f"{what} is not installed here ({fix})"
    if IN_CI:
        pytest.fail(f"CI must have {message}", pytrace=False)
    pytest.skip(message)


def postgres_installed() -> bool:
    return bool(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or shutil.which("initdb") is not None


def browser_installed() -> bool:
    return (
        shutil.which("chromium") is not None
        and shutil.which("node") is not None
        and (ROOT / "tests" / "ui" / "node_modules" / "playwright-core").is_dir()
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url: str, auth: tuple[str, str] | None = None, timeout: float = 10) -> int:
    import requests

    return requests.get(url, auth=auth, timeout=timeout).status_code


def wait_http(url: str, seconds: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@contextlib.contextmanager
def plain_mlflow_server(backend_store_uri: str, log: Path):
    """`mlflow server` on a local store, no auth, on a free loopback port; stopped by its PID."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [
                str(ROOT / ".venv" / "bin" / "mlflow"),
                "server",
                "--backend-store-uri",
                backend_store_uri,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=log.parent,
        )
    try:
        if not wait_http(f"{url}/health", 120, proc):
            pytest.fail(f"mlflow server did not start: {log.read_text()[-3000:]}", pytrace=False)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # its own session: the server and its workers
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
