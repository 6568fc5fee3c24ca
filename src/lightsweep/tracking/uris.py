"""Tracking URIs: what kind of store they name, and how to show them without a password."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse


def is_server(tracking_uri: str) -> bool:
    return urlparse(tracking_uri).scheme in ("http", "https")


def sqlite_path(tracking_uri: str) -> Path | None:
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri[len("sqlite:///") :])


def describe(tracking_uri: str) -> str:
    """The URI with any password replaced by ***, fit for printing and logging."""
    from sqlalchemy.engine import make_url  # parses scheme://user:password@host of any scheme, http too
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(tracking_uri)
    except (ArgumentError, ValueError):
        url = None
    if url is not None and "@" not in (url.host or ""):
        # Rendered only when there is a password to hide: rendering re-quotes the rest (`:memory:`).
        return tracking_uri if url.password is None else url.render_as_string(hide_password=True)
    # Not a URL (a path, a sentence), a malformed one (a bad port), or a raw "@" in the password that
    # make_url would cut short: hide everything between the scheme and the last "@".
    scheme, sep, rest = tracking_uri.partition("://")
    at = rest.rfind("@")
    return f"{scheme}{sep}***{rest[at:]}" if sep and at >= 0 else tracking_uri


def ui_command(tracking_uri: str) -> str:
    if sqlite_path(tracking_uri):
        return f"mlflow ui --backend-store-uri {tracking_uri}"
    if urlparse(tracking_uri).scheme in ("http", "https"):
        return f"open {describe(tracking_uri)} in a browser"
    return f"mlflow ui --backend-store-uri {describe(tracking_uri)}"
