"""What a run records about where it came from: the code version, library versions, the owning process."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import socket
import subprocess
from importlib import metadata

from harness.paths import PACKAGE_DIR, project_root

log = logging.getLogger("harness.tracking")


VERSIONED = ("tensorflow", "keras", "mlflow", "hydra-core", "numpy", "pandas")


def git_commit() -> str:
    """HEAD of the project checkout, suffixed `-dirty` when tracked files changed; `unknown` outside git."""
    root = project_root()
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


@functools.cache
def package_digest() -> str:
    """Digest of every module of the harness package: the code version a run records, git or not."""
    h = hashlib.sha256()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        h.update(path.relative_to(PACKAGE_DIR).as_posix().encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def library_versions() -> dict[str, str]:
    """Python and the versions of the libraries that decide a result."""
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def process_tags() -> dict[str, str]:
    """Which process owns a run (see `harness.jobs.leases`): host and pid for people, `owner` for the reaper."""
    from harness.tracking.owner import owner

    return {"host": socket.gethostname(), "pid": str(os.getpid()), "owner": owner()}
