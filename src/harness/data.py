"""Image folders in Chollet's layout: discovery, validation, stratified subsampling and tf.data input.

A data folder holds `train/`, `validation/` and optionally `test/`, each with one subfolder per class.
Everything that can be wrong with it is found here, by reading file names and a few bytes per file,
before any model is built.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.errors import HarnessError

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
REQUIRED_SPLITS = ("train", "validation")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


@dataclass(frozen=True)
class Split:
    """The files of one split, their integer labels (index into the class names) and content digests."""

    files: tuple[Path, ...]
    labels: np.ndarray
    digests: tuple[str, ...]  # sha256 of each file's bytes, read once by the scan

    def select(self, keep: list[int]) -> Split:
        """The files at positions `keep`, in that order."""
        return Split(tuple(self.files[i] for i in keep), self.labels[keep], tuple(self.digests[i] for i in keep))

    def __len__(self) -> int:
        return len(self.files)

    def class_counts(self, num_classes: int) -> list[int]:
        return np.bincount(self.labels, minlength=num_classes).tolist()


@dataclass(frozen=True)
class ImageFolder:
    """A scanned data folder: class names, the splits present, and the unreadable files left out."""

    root: Path
    class_names: tuple[str, ...]
    splits: Mapping[str, Split]
    bad_files: tuple[Path, ...] = field(default=())

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_test(self) -> bool:
        return "test" in self.splits


def _jpeg_problem(content: bytes) -> str | None:
    """Walk the JPEG's marker segments up to the image data, then look for the end-of-image marker after it.

    Inside entropy-coded data a 0xFF byte is always followed by 0x00 or a restart marker, so an FF D9
    after the first scan header is the real end of the image: bytes appended after it (camera trailers)
    are fine, and an EXIF thumbnail's own end marker does not hide a truncated main image.
    """
    i, n = 2, len(content)
    while i + 4 <= n:
        if content[i] != 0xFF:
            return f"corrupt JPEG (no segment marker at byte {i})"
        marker = content[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker == 0xD9:
            return "corrupt JPEG (ends before any image data)"
        data = i + 2 + int.from_bytes(content[i + 2 : i + 4], "big")
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            return None if content.find(b"\xff\xd9", data) != -1 else "truncated JPEG (no end-of-image marker)"
        i = data
    return "truncated JPEG (ends inside its headers)"


def image_problem(content: bytes) -> str | None:
    """Why these bytes cannot be an image; None when they look whole.

    Cheap enough to run on every file of every job (no decoding): catches zero-byte files, text saved as
    `.jpg`, JPEGs whose segment structure is broken or truncated and PNGs without their end chunk, which
    would otherwise crash training mid-epoch. With data.on_bad_file=skip such files are left out.
    """
    if not content:
        return "empty file"
    head = content[:8]
    if head.startswith(b"\xff\xd8\xff"):
        return _jpeg_problem(content)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return None if b"IEND" in content[-64:] else "truncated PNG (no IEND chunk)"
    if head.startswith((b"GIF87a", b"GIF89a", b"BM")):
        return None
    return "not a JPEG, PNG, GIF or BMP image"


def _list_images(class_dir: Path) -> list[Path]:
    return sorted(p for p in class_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def scan_folder(path: str | Path, on_bad_file: str = "skip") -> ImageFolder:
    """Read a folder in Chollet's layout and check it, raising HarnessError with the first problem."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise HarnessError(
            f"data.path={str(path)!r} is not a folder. Expected train/, validation/ and optionally test/, "
            "each with one subfolder per class."
        )
    root = root.resolve()
    missing = [s for s in REQUIRED_SPLITS if not (root / s).is_dir()]
    if missing:
        raise HarnessError(
            f"data.path={str(root)!r} has no {' or '.join(f'{m}/' for m in missing)} folder; "
            f"required splits are {list(REQUIRED_SPLITS)} (test/ is optional)."
        )

    class_names: tuple[str, ...] | None = None
    splits: dict[str, Split] = {}
    bad: list[tuple[Path, str]] = []
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            log.info("data: no %s/ split in %s; test metrics will be reported as absent", split, root)
            continue
        names = tuple(sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith(".")))
        if len(names) < 2:
            raise HarnessError(f"{split_dir} has {len(names)} class folder(s) {list(names)}; a classifier needs >= 2")
        if class_names is None:
            class_names = names
        elif names != class_names:
            raise HarnessError(
                f"class folders differ between splits: train has {list(class_names)}, {split} has {list(names)}"
            )
        files: list[Path] = []
        labels: list[int] = []
        digests: list[str] = []
        for label, name in enumerate(names):
            candidates = _list_images(split_dir / name)
            good = 0
            for f in candidates:
                content = f.read_bytes()  # read once: checked here, and its digest is the file's identity
                problem = image_problem(content)
                if problem is None:
                    files.append(f)
                    labels.append(label)
                    digests.append(hashlib.sha256(content).hexdigest())
                    good += 1
                else:
                    bad.append((f, problem))
            if not good:
                raise HarnessError(
                    f"class folder {split_dir / name} has no readable images "
                    f"(looked for {', '.join(IMAGE_SUFFIXES)}; {len(candidates)} candidate file(s))"
                )
        splits[split] = Split(tuple(files), np.asarray(labels, dtype=np.int32), tuple(digests))

    if bad:
        listing = "\n".join(f"  {p}: {why}" for p, why in bad)
        if on_bad_file == "stop":
            raise HarnessError(
                f"{len(bad)} unreadable image file(s) in {root} (data.on_bad_file=stop):\n{listing}\n"
                "Remove them, or set data.on_bad_file=skip to leave them out."
            )
        log.warning("data: skipped %d unreadable file(s) (data.on_bad_file=skip):\n%s", len(bad), listing)
    assert class_names is not None
    return ImageFolder(root, class_names, splits, tuple(p for p, _ in bad))


def check_fraction(fraction: float, train: Split, class_names: tuple[str, ...]) -> None:
    """Raise if `fraction` would leave some class of the training split without an image."""
    for label, count in enumerate(train.class_counts(len(class_names))):
        if round(count * fraction) < 1:
            raise HarnessError(
                f"data_fraction={fraction} leaves class {class_names[label]!r} with no training image "
                f"(it has {count}); use data_fraction >= {1 / count:.4g}"
            )


def subsample(split: Split, fraction: float, seed: int, class_names: tuple[str, ...]) -> Split:
    """A stratified, seeded, nested subsample: round(n_c * fraction) files of each class, in file order.

    Each class is shuffled by one permutation that depends on the seed alone, and a fraction takes its first
    files, so for one seed the files at 10% are among those at 25%, 50% and 100%: a data-fraction curve then
    measures more data, not other data.
    """
    if fraction == 1.0:
        return split
    check_fraction(fraction, split, class_names)
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for label in range(len(class_names)):
        order = rng.permutation(np.flatnonzero(split.labels == label))
        keep.extend(order[: round(len(order) * fraction)].tolist())
    keep.sort()
    return split.select(keep)


def split_identity(split: Split, class_names: tuple[str, ...]) -> str:
    """What a split is, by content: each file's class, name and byte digest, never its folder.

    The same photographs copied or mounted elsewhere have the same identity; an edited photograph, a
    renamed class or a different subsample does not.
    """
    lines = sorted(
        f"{class_names[label]}/{f.name}\t{digest}"
        for f, label, digest in zip(split.files, split.labels, split.digests, strict=True)
    )
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:24]


def _decoder(image_size: int):
    import tensorflow as tf

    def decode(path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image = tf.image.resize(image, (image_size, image_size), method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)

    return decode


def load_images(files: tuple[Path, ...], image_size: int) -> np.ndarray:
    """Decode and resize every file once, in parallel, into a uint8 array (N, size, size, 3).

    A file can pass `image_problem` (its first and last bytes look right) and still be corrupt inside;
    then every such file is named in a HarnessError rather than failing somewhere inside tf.data.
    """
    import tensorflow as tf

    decode = _decoder(image_size)
    ds = tf.data.Dataset.from_tensor_slices([str(f) for f in files])
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(256)
    try:
        batches = [b.numpy() for b in ds]
    except tf.errors.InvalidArgumentError:
        broken = []
        for f in files:
            try:
                decode(tf.constant(str(f)))
            except tf.errors.InvalidArgumentError:
                broken.append(f)
        listing = "\n".join(f"  {f}" for f in broken)
        raise HarnessError(
            f"{len(broken)} file(s) look like images but cannot be decoded (corrupt inside):\n{listing}\n"
            "Remove or replace them."
        ) from None
    if not batches:
        return np.zeros((0, image_size, image_size, 3), np.uint8)
    return np.concatenate(batches)


# --- data sources -------------------------------------------------------------------------------


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
    import os
    import shutil
    import tempfile

    key = hashlib.sha256(repr(sorted(dict(images_per_class).items())).encode()).hexdigest()[:8]
    target = Path(path).expanduser() / key
    if (target / "train").is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        _write_synthetic(tmp, images_per_class, seed)
        os.rename(tmp, target)
    except OSError:
        if not (target / "train").is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def download_archive(url: str) -> Path:
    """Fetch and extract a zip archive through Keras' cache; return the folder holding train/."""
    import keras

    name = url.rstrip("/").rsplit("/", 1)[-1]
    try:
        archive = Path(keras.utils.get_file(name, origin=url, extract=False))
    except Exception as exc:  # noqa: BLE001 - any network failure means the same thing to the user
        raise HarnessError(f"could not download {url} ({exc})") from exc
    out = archive.with_suffix("")
    if not out.exists():
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(out)
    for candidate in [out, *sorted(p for p in out.rglob("*") if p.is_dir())]:
        if (candidate / "train").is_dir():
            return candidate
    raise HarnessError(f"the archive {archive} has no train/ folder")


def resolve_data_path(data_cfg: Mapping) -> Path:
    """The local folder behind a `data` config: as given, generated, or downloaded."""
    if data_cfg["source"] == "synthetic":
        return ensure_synthetic(data_cfg["path"], data_cfg["images_per_class"])
    if data_cfg["source"] == "download":
        return download_archive(str(data_cfg["url"]))
    return Path(str(data_cfg["path"])).expanduser()
