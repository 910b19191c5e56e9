"""Where a data folder comes from: a path given, generated offline (the quickstart's shapes), or the TensorFlow
tutorial's archive downloaded through Keras' cache, so that nothing cut short is ever used."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from harness.errors import HarnessError
from harness.files import atomic_folder

if TYPE_CHECKING:
    from harness.config.schema import Data

log = logging.getLogger(__name__)


def _write_synthetic(root: Path, images_per_class: Mapping[str, int], seed: int) -> None:
    """Two visually separable classes (bright disks, dark squares) on noise, as JPEGs."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for split, n in images_per_class.items():
        for cls in ("disks", "squares"):
            out = root / split / cls
            out.mkdir(parents=True, exist_ok=True)
            for i in range(int(n)):
                size = int(rng.integers(64, 97))
                noise = rng.integers(60, 140, size=(size, size, 3), dtype=np.uint8)
                img = Image.fromarray(noise)
                draw = ImageDraw.Draw(img)
                r = int(rng.integers(size // 6, size // 3))
                cx, cy = (int(v) for v in rng.integers(r, size - r, size=2))
                box = (cx - r, cy - r, cx + r, cy + r)
                if cls == "disks":
                    draw.ellipse(box, fill=tuple(int(v) for v in rng.integers(190, 256, 3)))
                else:
                    draw.rectangle(box, fill=tuple(int(v) for v in rng.integers(0, 50, 3)))
                img.save(out / f"{cls}.{i}.jpg", quality=90)


def ensure_synthetic(path: str | Path, images_per_class: Mapping[str, int], seed: int = 0) -> Path:
    """Generate the offline quickstart dataset once; concurrent jobs race safely via an atomic rename."""
    key = hashlib.sha256(repr(sorted(dict(images_per_class).items())).encode()).hexdigest()[:8]
    target = Path(path).expanduser() / key
    if not (target / "train").is_dir():
        with atomic_folder(target, lambda p: (p / "train").is_dir()) as tmp:
            _write_synthetic(tmp, images_per_class, seed)
    return target


def keras_cache(subdir: str) -> Path:
    """Where Keras' `get_file` keeps downloads: $KERAS_HOME (else ~/.keras), or /tmp/.keras if that is read-only."""
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser()
    if not os.access(home, os.W_OK):
        home = Path(tempfile.gettempdir()) / ".keras"
    return home / subdir


def zip_problem(path: Path) -> str | None:
    """Why a zip archive is not whole (a download cut short: no central directory; a damaged member: a CRC
    mismatch), or None."""
    try:
        with zipfile.ZipFile(path) as zf:
            broken = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return str(exc) or type(exc).__name__
    return None if broken is None else f"member {broken} fails its CRC check"


COMPLETE = ".complete"  # written into an extraction folder before it is renamed into place


def download_archive(url: str) -> Path:
    """Fetch and extract a zip archive through Keras' cache; return the folder holding train/.

    Nothing cut short is ever used, whenever a process is killed: the archive is downloaded under a temporary
    name and renamed into place only once its zip structure and every member's CRC check out (an archive left
    by older code that does not is discarded and fetched again), and it is extracted into a temporary folder
    that is renamed into place, marked complete, only when every file is out.
    """
    import keras

    name = url.rstrip("/").rsplit("/", 1)[-1]
    folder = keras_cache("datasets")
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / name
    if archive.exists() and (problem := zip_problem(archive)) is not None:
        log.warning("data: discarding the incomplete archive %s (%s); fetching it again", archive, problem)
        archive.unlink()
    if not archive.exists():
        part = f".{name}.{os.getpid()}.part"
        try:
            fetched = Path(keras.utils.get_file(part, origin=url, cache_dir=str(folder.parent), extract=False))
        except Exception as exc:  # noqa: BLE001 - any network failure means the same thing to the user
            (folder / part).unlink(missing_ok=True)
            raise HarnessError(f"could not download {url} ({exc})") from exc
        problem = zip_problem(fetched)
        if problem is not None:
            fetched.unlink(missing_ok=True)
            raise HarnessError(f"the download of {url} is not a whole zip archive ({problem}); try again")
        os.replace(fetched, archive)
    out = archive.with_suffix("")
    if out.exists() and not (out / COMPLETE).exists():  # an extraction cut short by older code
        log.warning("data: discarding the incomplete extraction %s; extracting the archive again", out)
        shutil.rmtree(out, ignore_errors=True)
    if not out.exists():
        with atomic_folder(out, lambda p: (p / COMPLETE).exists()) as tmp, zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
            (tmp / COMPLETE).write_text(json.dumps({"archive": name}))
    for candidate in [out, *sorted(p for p in out.rglob("*") if p.is_dir())]:
        if (candidate / "train").is_dir():
            return candidate
    raise HarnessError(f"the archive {archive} has no train/ folder")


def downloads(data_cfg: Data) -> bool:
    """Whether the data comes from the download: `data.path`, when given, is used instead (never ignored)."""
    return data_cfg.source == "download" and not data_cfg.path


def resolve_data_path(data_cfg: Data) -> Path:
    """The local folder behind a `data` config: as given, generated, or downloaded."""
    if data_cfg.source == "synthetic":
        return ensure_synthetic(str(data_cfg.path), data_cfg.images_per_class)
    if downloads(data_cfg):
        return download_archive(str(data_cfg.url))
    return Path(str(data_cfg.path)).expanduser()
