"""The data directory: created by the commands that start a deployment, required by the rest,
and the place where ``serve`` records the address it serves.

Events hold personal data, so the directory is 0700 and every file the process creates is
0600 (:func:`private_files`).  Commands other than ``serve``, ``setup`` and ``project
create`` never create it: run from the wrong working directory, ``project list`` would
otherwise show an empty store instead of saying where it looked.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

BASE_URL_FILE = "base_url"
# What `stacksift serve` listens on when given no --host/--port.
DEFAULT_BASE_URL = "http://127.0.0.1:8000"
WILDCARD_HOSTS = {"0.0.0.0", "::", ""}


class DataDirError(Exception):
    """A data directory that is missing or unusable; the message names its absolute path."""


def private_files() -> None:
    """Files and directories this process creates are its user's alone."""
    os.umask(0o077)


def create(path: Path) -> Path:
    """Make the data directory (0700) if it is missing; return its absolute path."""
    path = path.expanduser().absolute()
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirError(f"cannot create the data directory {path}: {exc.strerror}") from None
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise DataDirError(f"the data directory {path} is not writable by this user")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        # Made by an older version or by hand: the files inside are out of reach once
        # the directory is, whatever their own modes say.
        with contextlib.suppress(PermissionError):
            path.chmod(mode & 0o700)
    return path


def require(path: Path) -> Path:
    """The absolute path of an existing data directory, else a DataDirError saying how to
    get one."""
    path = path.expanduser().absolute()
    if not path.is_dir():
        raise DataDirError(
            f"no data directory at {path}: start `stacksift serve` (or `stacksift setup`) with "
            "this STACKSIFT_DATA_DIR first, or set STACKSIFT_DATA_DIR to where it is"
        )
    return path


def served_url(scheme: str, host: str, port: int) -> str:
    """The base URL of a server bound to host:port (IPv6 literals bracketed)."""
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def record_base_url(path: Path, url: str) -> None:
    """Remember the address ``serve`` serves, for the CLI's DSNs and alert links."""
    tmp = path / f"{BASE_URL_FILE}.tmp"
    tmp.write_text(url + "\n")
    tmp.replace(path / BASE_URL_FILE)


def recorded_base_url(path: Path) -> str | None:
    try:
        return (path / BASE_URL_FILE).read_text().strip() or None
    except FileNotFoundError:
        return None
