"""A content-addressed, on-disk cache for what a sweep would otherwise recompute in every job.

Entries are keyed by a hash of everything that determines their content (never by run ids or paths of
stores), so later jobs and later sweeps reuse them. Each entry is written to a temporary file in the
same folder and renamed into place (`harness.files`): readers never see a torn file, two jobs building the
same entry at once leave one good entry (both wrote identical content), and entries follow the umask.

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
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from harness.errors import HarnessError
from harness.files import atomic_file, atomic_folder

T = TypeVar("T")

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

    def __init__(self, root: str | Path | None):
        self.root = Path(root).expanduser() if root else None
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
            return np.load(self.path(key))
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
        self, keys: Mapping[str, str], build: Callable[[list[str]], dict[str, np.ndarray]]
    ) -> dict[str, np.ndarray]:
        """One array per name: loaded where cached, else built together (one call for all missing) and stored."""
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
            built = build(missing)
            self.stats.build_s += time.perf_counter() - t0
            for name in missing:
                out[name] = built[name]
                self.stats.misses.append(keys[name])
                if self.enabled:
                    with atomic_file(self.path(keys[name])) as tmp:
                        _save_npy(tmp, built[name])
        return out

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


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, array)
        fh.flush()
        os.fsync(fh.fileno())
