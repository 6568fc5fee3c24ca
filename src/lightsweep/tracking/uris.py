"""Tracking URIs: what kind of store they name, and how to show them without a password."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse


def is_server(tracking_uri: str) -> bool:
    return urlparse(tracking_uri).scheme in ("http", "https")


def sqlite_path(tracking_uri: str) -> Path | None:
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri[len("sqlite:///") :])


def describe(tracking_uri: str) -> str:
    """The URI with any password removed, fit for printing and logging."""
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", tracking_uri)


def ui_command(tracking_uri: str) -> str:
    if sqlite_path(tracking_uri):
        return f"mlflow ui --backend-store-uri {tracking_uri}"
    if urlparse(tracking_uri).scheme in ("http", "https"):
        return f"open {describe(tracking_uri)} in a browser"
    return f"mlflow ui --backend-store-uri {describe(tracking_uri)}"
