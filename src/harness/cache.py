"""A content-addressed, on-disk cache for what a sweep would otherwise recompute in every job.

Entries are keyed by a hash of everything that determines their content (never by run ids or paths of
stores), so later jobs and later sweeps reuse them. Each entry is written to a temporary file in the
same folder and renamed into place: readers never see a torn file, and two jobs building the same
entry at once leave one good entry (the last rename wins; both wrote identical content).

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
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def make_key(kind: str, parts: Mapping[str, Any]) -> str:
    """`<kind>-<digest of the parts and of the producing code>`: identical parts, identical key, in any
    process; a change to the code that produces entries, or to TensorFlow or Keras, gives new keys."""
    from harness.identity import code_identity, digest

    return f"{kind}-{digest({'kind': kind, 'code': code_identity(), **parts})}"


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
    """Arrays (`.npy`) and small bundles of files under one root folder; `root=None` disables it."""

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
        return (path / "done.json").is_file() if suffix == "" else path.is_file()

    def arrays(
        self, keys: Mapping[str, str], build: Callable[[list[str]], dict[str, np.ndarray]]
    ) -> dict[str, np.ndarray]:
        """One array per name: loaded where cached, else built together (one call for all missing) and stored."""
        out: dict[str, np.ndarray] = {}
        missing = []
        for name, key in keys.items():
            if self.has(key):
                out[name] = np.load(self.path(key))
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
                    _atomic_write(self.path(keys[name]), lambda p, a=built[name]: _save_npy(p, a))
        return out

    def load_bundle(self, key: str) -> Path | None:
        """The folder of a stored bundle (e.g. a trained head phase), or None."""
        if not self.enabled:
            return None
        if self.has(key, ""):
            self.stats.hits.append(key)
            return self.path(key, "")
        return None

    def store_bundle(self, key: str, write: Callable[[Path], None]) -> None:
        """Write a bundle into a temporary folder and rename it into place (first complete one wins)."""
        if not self.enabled:
            return
        self.stats.misses.append(key)
        target = self.path(key, "")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=target.parent))
        try:
            write(tmp)
            (tmp / "done.json").write_text(json.dumps({"key": key, "written": time.time()}))
            try:
                os.rename(tmp, target)
            except OSError:
                if not (target / "done.json").is_file():  # not a lost race with an identical bundle
                    raise
        finally:
            if tmp.exists():
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, array)
        fh.flush()
        os.fsync(fh.fileno())
