"""What a scan found in each file, kept between scans so that an unchanged file is not read again.

A scan reads every file: to check it and to digest it for the job's content identity (a 22,000-image folder
took 48 s, in every new process). As git's index does, an entry here is keyed by the file's path and its
stat: size, mtime, ctime, inode and device. A file whose stat is unchanged is taken from the index unread.
ctime is in the key because any write changes it, even one that puts size and mtime back (`touch -d`),
and no user can set it. A file written again within the same timestamp tick as it was read would keep its
stat (git's "racily clean" entries): an entry whose file's mtime or ctime lies within RACY_NS of the moment
the file was read is not trusted, and the file is read again (then it is old enough to be trusted).

The index is a SQLite file under `cache_dir` (the data folder may be read-only), shared by parallel jobs
and sweeps; delete it at any time. Without a cache (`cache=false`) every file is read, as before.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

from harness.data.checks import Inspection, inspect

log = logging.getLogger(__name__)

NAME = "scan_index.sqlite3"
RACY_NS = 2_000_000_000  # coarser than the timestamps of any filesystem in use (FAT's are 2 s)
_SCHEMA = """CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, inode INTEGER, device INTEGER,
    read_ns INTEGER, problem TEXT, pixels INTEGER, size_text TEXT, digest TEXT)"""


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev


class ScanIndex:
    """The entries of the files under one folder, read at the start of its scan and written back at its end.

    `lookup` answers for a file whose stat matches a trusted entry; `record` keeps what reading a file found.
    `read` and `reused` count the scan's files each way.
    """

    def __init__(self, cache_dir: Path | None, root: Path):
        self.path = None if cache_dir is None else Path(cache_dir) / NAME
        self.root = str(root)
        self.read = self.reused = 0
        self._entries: dict[str, tuple] = {}
        self._new: list[tuple] = []
        if self.path is not None and self.path.is_file():
            try:
                with self._connect() as db:
                    prefix = self.root.rstrip(os.sep) + os.sep
                    rows = db.execute(
                        "SELECT * FROM files WHERE path >= ? AND path < ?", (prefix, prefix[:-1] + chr(ord(os.sep) + 1))
                    )
                    self._entries = {row[0]: row[1:] for row in rows}
            except sqlite3.Error as exc:  # unreadable: every file is read, and the index is rebuilt if it can be
                log.warning("data: scan index %s unreadable (%s); reading every file", self.path, exc)

    def _connect(self) -> sqlite3.Connection:
        assert self.path is not None  # only called with a cache folder
        db = sqlite3.connect(self.path, timeout=60)
        db.execute(_SCHEMA)
        return db

    def inspect(self, file: Path) -> Inspection:
        """What `file` holds, from the index when its stat says it is unchanged, else by reading it."""
        try:
            st = os.stat(file)
        except OSError:  # a broken link or a file gone: `inspect` says which, and nothing is kept
            self.read += 1
            return inspect(file)
        entry = self._entries.get(str(file))
        key = _stat_key(st)
        if entry is not None and tuple(entry[:5]) == key and _trusted(st, entry[5]):
            self.reused += 1
            problem, pixels, size_text, digest = entry[6:]
            return Inspection(problem, pixels, size_text, digest=digest)
        read_ns = time.time_ns()
        found = inspect(file)
        self.read += 1
        if found.content:  # read: its findings hold as long as its stat does
            self._new.append((str(file), *key, read_ns, found.problem, found.pixels, found.size, found.digest))
        return found

    def save(self) -> None:
        """Write this scan's new entries (nothing when the cache is off or cannot be written: the next scan
        reads those files again)."""
        if self.path is None or not self._new:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as db:
                db.executemany(f"INSERT OR REPLACE INTO files VALUES ({', '.join('?' * 11)})", self._new)
            self._new = []
        except (OSError, sqlite3.Error) as exc:
            log.warning("data: scan index %s not written (%s); the next scan reads these files again", self.path, exc)


def _trusted(st: os.stat_result, read_ns: int) -> bool:
    """False for a racily clean entry: the file changed within RACY_NS before it was read, so a later write in the
    same timestamp tick could have left its stat as it was."""
    return max(st.st_mtime_ns, st.st_ctime_ns) < read_ns - RACY_NS
