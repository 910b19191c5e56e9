"""A content-addressed, on-disk cache for what a sweep would otherwise recompute in every job.

Entries are keyed by a hash of everything that determines their content (never by run ids or paths of
stores), so later jobs and later sweeps reuse them. Each entry is written to a temporary file in the
same folder and renamed into place (`harness.files`): readers never see a torn file, two jobs building the
same entry at once leave one good entry (both wrote identical content), and entries follow the umask.

Arrays are written as they are produced, into a `.npy` file under its temporary name (`NpyWriter`), and read
back memory-mapped: nothing sized by the dataset is held in the process's own memory (the kernel keeps the
file pages it can drop), so a split of 100,000 images costs disk, not RAM. Arrays of a disabled cache
(`cache=false`), and those never stored (a scratch model's preprocessed pixels), go to a file in the system's
temporary folder (`$TMPDIR`) that is unlinked as soon as it is created: the kernel frees it when the job ends,
however it ends.

Kinds of entry:
- `images`:   decoded, resized uint8 images of one split's chosen files;
- `features`: a frozen stage's output (float32) for one split;
- `head`:     a trained head phase (weights + history + test metrics), shared by fine-tuning jobs
              that differ only in `unfreeze_at` or `lr`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from harness.errors import HarnessError
from harness.files import atomic_file, atomic_folder, follow_umask
from harness.jobs.npy_writer import NpyWriter

T = TypeVar("T")

# (name, shape, dtype) -> what a builder writes its output into, in row slices (`out[a:b] = rows`): an NpyWriter
# on the entry's file (or an unlinked spill file), or an array in memory where there is no file to write
Allocate = Callable[[str, tuple[int, ...], Any], Any]

log = logging.getLogger(__name__)


def make_key(kind: str, parts: Mapping[str, Any], regime_module: str | None = None) -> str:
    """`<kind>-<digest of the parts and of the producing code>`: identical parts, identical key, in any
    process; a change to the code that produces entries (`identity.producers`: a regime's stored state also
    depends on `regime_module`), or to TensorFlow or Keras, gives new keys."""
    from harness.jobs.identity import code_identity, digest, producers

    return f"{kind}-{digest({'kind': kind, 'code': code_identity(producers(kind, regime_module)), **parts})}"


@dataclass
class Stats:
    """Hits, misses and build seconds of one job, for its MLflow run."""

    hits: list[str] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)
    build_s: float = 0.0

    def as_metrics(self, prefix: str = "cache") -> dict[str, float]:
        return {
            f"{prefix}_hits": len(self.hits),
            f"{prefix}_misses": len(self.misses),
            f"{prefix}_build_s": self.build_s,
        }


class ArrayCache:
    """Arrays (`.npy`) and small bundles of files under one root folder; `root=None` disables it.

    An entry that cannot be read back (truncated by a full disk, damaged by hand) is discarded with a warning
    and rebuilt, never served and never fatal.
    """

    def __init__(self, root: str | Path | None, spill: str | Path | None = None):
        self.root = Path(root).expanduser() if root else None
        # where arrays that are not stored are written (unlinked once created); None: in memory (small tests)
        self.spill = Path(spill).expanduser() if spill else None
        self.stats = Stats()

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def path(self, key: str, suffix: str = ".npy") -> Path:
        assert self.root is not None
        return self.root / key[: key.index("-")] / f"{key}{suffix}"

    def has(self, key: str, suffix: str = ".npy") -> bool:
        """Whether an array entry (or, with suffix "", a complete bundle) is stored; counts nothing."""
        if not self.enabled:
            return False
        path = self.path(key, suffix)
        return (path / DONE).is_file() if suffix == "" else path.is_file()

    def load(self, key: str) -> np.ndarray | None:
        """A stored array, or None when there is none or it cannot be read (then it is discarded)."""
        if not self.has(key):
            return None
        try:
            return _open(self.path(key))
        except (ValueError, OSError, EOFError) as exc:
            self.discard(key, ".npy", exc)
            return None

    def discard(self, key: str, suffix: str, why: object) -> None:
        """Remove an entry that cannot be used, so that it is built again."""
        path = self.path(key, suffix)
        log.warning("cache: entry %s cannot be read (%s); discarded, it is built again", path, why)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def arrays(
        self, keys: Mapping[str, str], build: Callable[[list[str], Allocate], dict[str, np.ndarray]]
    ) -> dict[str, np.ndarray]:
        """One array per name: memory-mapped where cached, else built together (one call for all missing, writing
        into the arrays `allocate` gives it) and stored, then mapped read-only."""
        out: dict[str, np.ndarray] = {}
        missing = []
        for name, key in keys.items():
            array = self.load(key)
            if array is not None:
                out[name] = array
                self.stats.hits.append(key)
            else:
                missing.append(name)
        if missing:
            t0 = time.perf_counter()
            paths = {name: self.path(keys[name]) for name in missing} if self.enabled else None
            with self._allocator(paths) as (allocate, commit):
                built = build(missing, allocate)
                out.update(commit(built))
            self.stats.build_s += time.perf_counter() - t0
            self.stats.misses.extend(keys[name] for name in missing)
        return out

    def temporary(
        self, names: list[str], build: Callable[[list[str], Allocate], dict[str, np.ndarray]]
    ) -> dict[str, np.ndarray]:
        """Arrays that are never stored (preprocessed pixels), built into unlinked spill files as a disabled
        cache's are."""
        with self._allocator(None) as (allocate, commit):
            return commit(build(names, allocate))

    @contextmanager
    def _allocator(self, paths: dict[str, Path] | None) -> Iterator[tuple[Allocate, Callable]]:
        """`allocate` gives arrays to fill: beside their entry under a temporary name (`paths`), else unlinked
        spill files (or memory without a spill folder). `commit` renames the filled ones into place. A build
        that fails removes its temporary files; one killed leaves them under names no reader takes, removed by a
        later build on the same machine once their process is gone."""
        written: dict[str, tuple[Path, NpyWriter]] = {}
        spilled: list[NpyWriter] = []

        def allocate(name: str, shape: tuple[int, ...], dtype: Any) -> Any:
            if (paths is None and self.spill is None) or not _sized(shape):
                return np.empty(shape, dtype)
            folder = paths[name].parent if paths is not None else self.spill
            assert folder is not None
            folder.mkdir(parents=True, exist_ok=True)
            _remove_orphans(folder)
            prefix = f".{paths[name].name}." if paths is not None else ".spill."
            fd, tmp = tempfile.mkstemp(prefix=f"{prefix}{_OWNER}.", suffix=".tmp", dir=folder)
            writer = NpyWriter(os.fdopen(fd, "w+b"), shape, dtype)
            if paths is None:  # spilled: the open file keeps the data; the name goes now, so nothing is left behind
                os.unlink(tmp)
                spilled.append(writer)
            else:
                written[name] = (Path(tmp), writer)
            return writer

        def commit(built: dict[str, Any]) -> dict[str, np.ndarray]:
            if paths is None:
                return {name: a.mapped() if isinstance(a, NpyWriter) else a for name, a in built.items()}
            out = {}
            for name, array in built.items():
                if name in written and array is written[name][1]:
                    tmp = written.pop(name)[0]
                    array.close()
                    follow_umask(tmp)
                    os.replace(tmp, paths[name])
                else:  # a builder that made its own array (or an empty one): saved whole
                    with atomic_file(paths[name]) as tmp:
                        _save_npy(tmp, array)
                out[name] = _open(paths[name])
            return out

        try:
            yield allocate, commit
        finally:
            for tmp, writer in written.values():
                writer.fh.close()
                tmp.unlink(missing_ok=True)
            for writer in spilled:
                writer.fh.close()  # a mapped one keeps its mapping

    def load_bundle(self, key: str, read: Callable[[Path], T]) -> T | None:
        """A stored bundle (e.g. a trained head phase) read by `read`, or None when there is none or `read`
        fails on it (then it is discarded)."""
        if not self.has(key, ""):
            return None
        try:
            value = read(self.path(key, ""))
        except Exception as exc:  # noqa: BLE001 - whatever a damaged bundle makes its reader raise
            self.discard(key, "", f"{type(exc).__name__}: {exc}")
            return None
        self.stats.hits.append(key)
        return value

    def store_bundle(self, key: str, write: Callable[[Path], None]) -> None:
        """Write a bundle into a temporary folder and rename it into place (first complete one wins)."""
        if not self.enabled:
            return
        self.stats.misses.append(key)
        with atomic_folder(self.path(key, ""), lambda p: (p / DONE).is_file()) as tmp:
            write(tmp)
            (tmp / DONE).write_text(json.dumps({"key": key, "written": time.time()}))


DONE = "done.json"  # the last file of a bundle: written only once the rest is


def check_writable(root: str | Path) -> None:
    """Raise HarnessError, before any job trains, when the cache cannot take new entries: its folder (or the
    nearest one that exists), and each entry-kind folder already in it, must accept a new file. Tried for
    real (a file created and removed), since permissions alone do not tell about read-only mounts or root."""
    folder = Path(root).expanduser()
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    targets = [existing] if existing is not None else []
    if existing == folder:
        targets += sorted(p for p in folder.iterdir() if p.is_dir() and p.name in KINDS)
    for target in targets:
        try:
            if not target.is_dir():
                raise NotADirectoryError(f"{target} is not a folder")
            with tempfile.NamedTemporaryFile(dir=target, prefix=".writable-"):
                pass
        except OSError as exc:
            raise HarnessError(
                f"cache_dir={str(folder)!r} cannot be written ({target}: {exc.strerror or exc}); give a writable "
                "cache_dir=... (on a cluster: a folder every node can write; for a group, created with umask 002) "
                "or cache=false"
            ) from exc
    if existing is None:
        raise HarnessError(f"cache_dir={str(folder)!r} cannot be created; give a writable cache_dir or cache=false")


KINDS = ("images", "features", "head")


_OWNER = f"{socket.gethostname()}-{os.getpid()}"  # in a temporary file's name: whose it is


def _remove_orphans(folder: Path) -> None:
    """Remove temporary files of this machine's processes that are gone (killed while they built an entry)."""
    host = socket.gethostname()
    for tmp in folder.glob(f".*.{host}-*.tmp"):
        pid = tmp.name.rsplit(f".{host}-", 1)[1].split(".", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            tmp.unlink(missing_ok=True)


def _sized(shape: tuple[int, ...]) -> bool:
    """Whether an array of this shape has any element (an empty one cannot be memory-mapped)."""
    return all(dim > 0 for dim in shape)


def _open(path: Path) -> np.ndarray:
    """A stored array, memory-mapped read-only (an empty one is read whole)."""
    array = np.load(path, mmap_mode="r")
    return array if array.size else np.load(path)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, array)
        fh.flush()
        os.fsync(fh.fileno())
