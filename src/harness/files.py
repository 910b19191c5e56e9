"""Writing files that others read while they are written: atomically, and with the permissions the umask gives.

Cache entries, downloaded archives and generated data may be read by other processes (parallel jobs, other
nodes, other users of a group cache) while one process writes them, and a process can be killed at any
moment. So everything is written under a temporary name in the destination's folder and renamed into place
once whole: a reader sees the old state or the whole new one, never a torn file. Temporary files and
folders are created private (0600 / 0700) by `tempfile`; before the rename they get the permissions an
ordinary `open` or `mkdir` would have given under the process's umask, so `umask 002` makes a group cache.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def umask() -> int:
    """The process's umask, read without changing it (Linux: /proc/self/status), else by setting it back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def follow_umask(path: Path, directory: bool = False) -> None:
    """Give a file (0666) or folder (0777) the permissions the umask leaves, as `open` or `mkdir` would."""
    os.chmod(path, (0o777 if directory else 0o666) & ~umask())


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write; renamed onto `path` when the block ends without error, removed
    otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        follow_umask(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_folder(path: Path, complete: Callable[[Path], bool]) -> Iterator[Path]:
    """A temporary folder beside `path` to fill; renamed onto `path` when the block ends without error. A folder
    is not replaced: if another process renamed a folder there first and `complete(path)` says it is whole,
    that one stands and this one is dropped (same content, by construction of the callers' keys)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        follow_umask(tmp, directory=True)
        try:
            os.rename(tmp, path)
        except OSError:
            if not complete(path):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
