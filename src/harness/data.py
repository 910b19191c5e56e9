"""Image folders in Chollet's layout: discovery, validation, stratified subsampling and tf.data input.

A data folder holds `train/`, `validation/` and optionally `test/`, each with one subfolder per class.
Everything that can be wrong with it is found here, by reading file names and a few bytes per file,
before any model is built.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.errors import HarnessError
from harness.files import atomic_folder

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
    ignored_files: tuple[Path, ...] = field(default=())  # not of an image type the harness reads (.webp, .tif, ...)

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


def shown(path: Path | str) -> str:
    """A path as text that any console and log can print: bytes that are not UTF-8 shown as escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _valid_name(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, kept by Python as surrogates
        return False
    return True


def file_problem(path: Path, max_pixels: int) -> tuple[str | None, bytes]:
    """Why the file at `path` cannot be one of the images, and its bytes (empty when unreadable).

    Checked without decoding: the name, the link, the bytes' structure (`image_problem`) and the image's
    size from its header (a 20,000 x 20,000 PNG of a few hundred KB decodes to gigabytes).
    """
    if not _valid_name(path.name):
        return "file name is not valid UTF-8 (rename it)", b""
    if path.is_symlink() and not path.exists():
        return f"broken symbolic link (to {shown(os.readlink(path))})", b""
    try:
        content = path.read_bytes()
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})", b""
    problem = image_problem(content)
    if problem is None:
        try:
            pixels, size = image_size(content)
        except Exception as exc:  # noqa: BLE001 - Pillow's errors for a header it cannot parse vary by format
            return f"image header cannot be read ({type(exc).__name__}: {exc})", content
        if pixels > max_pixels:
            problem = f"{size}, over data.max_pixels={max_pixels:,} (decoded, it would take gigabytes of memory)"
    return problem, content


def image_size(content: bytes) -> tuple[int, str]:
    """The image's pixel count and its size as text ("W x H = N pixels"), from its header alone (Pillow reads no
    pixel data for this). Pillow refuses to open an image over 179 megapixels (its own bomb check) but says how
    many it has, which is all the harness's own limit (`data.max_pixels`) needs."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the harness's limit decides
            with Image.open(io.BytesIO(content)) as image:
                width, height = image.size
    except Image.DecompressionBombError as exc:
        pixels = int(re.search(r"\((\d+) pixels\)", str(exc)).group(1))
        return pixels, f"{pixels:,} pixels"
    return width * height, f"{width} x {height} = {width * height:,} pixels"


def _list_files(class_dir: Path) -> tuple[list[Path], list[Path]]:
    """(candidate images by suffix, other files): links count as files, broken ones too (named bad later)."""
    entries = sorted(p for p in class_dir.iterdir() if not p.name.startswith(".") and not p.is_dir())
    images = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
    return images, [p for p in entries if p.suffix.lower() not in IMAGE_SUFFIXES]


def scan_folder(path: str | Path, on_bad_file: str = "skip", max_pixels: int = 100_000_000) -> ImageFolder:
    """Read a folder in Chollet's layout and check it, raising HarnessError with the first problem."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise HarnessError(
            f"data.path={shown(path)!r} is not a folder. Expected train/, validation/ and optionally test/, "
            "each with one subfolder per class."
        )
    root = root.resolve()
    missing = [s for s in REQUIRED_SPLITS if not (root / s).is_dir()]
    if missing:
        raise HarnessError(
            f"data.path={shown(root)!r} has no {' or '.join(f'{m}/' for m in missing)} folder; "
            f"required splits are {list(REQUIRED_SPLITS)} (test/ is optional)."
        )

    class_names: tuple[str, ...] | None = None
    splits: dict[str, Split] = {}
    bad: list[tuple[Path, str]] = []
    ignored: list[Path] = []
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            log.info("data: no %s/ split in %s; test metrics will be reported as absent", split, shown(root))
            continue
        names = tuple(sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith(".")))
        unnamed = [shown(split_dir / n) for n in names if not _valid_name(n)]
        if unnamed:
            raise HarnessError(f"class folder name(s) not valid UTF-8: {', '.join(unnamed)}; rename them")
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
            candidates, others = _list_files(split_dir / name)
            ignored += others
            good = 0
            for f in candidates:
                problem, content = file_problem(f, max_pixels)  # read once: checked, and its digest is its identity
                if problem is None:
                    files.append(f)
                    labels.append(label)
                    digests.append(hashlib.sha256(content).hexdigest())
                    good += 1
                else:
                    bad.append((f, problem))
            if not good:
                raise HarnessError(
                    f"class folder {shown(split_dir / name)} has no readable images "
                    f"(looked for {', '.join(IMAGE_SUFFIXES)}; {len(candidates)} candidate file(s))"
                )
        splits[split] = Split(tuple(files), np.asarray(labels, dtype=np.int32), tuple(digests))

    if ignored:
        by_suffix = Counter(p.suffix.lower() or "(none)" for p in ignored)
        log.warning(
            "data: left out %d file(s) that are not %s images (%s), e.g. %s",
            len(ignored),
            "/".join(s.lstrip(".") for s in IMAGE_SUFFIXES),
            ", ".join(f"{n} {suffix}" for suffix, n in sorted(by_suffix.items())),
            ", ".join(shown(p.relative_to(root)) for p in ignored[:3]),
        )
    if bad:
        listing = "\n".join(f"  {shown(p)}: {why}" for p, why in bad)
        if on_bad_file == "stop":
            raise HarnessError(
                f"{len(bad)} unreadable image file(s) in {shown(root)} (data.on_bad_file=stop):\n{listing}\n"
                "Remove them, or set data.on_bad_file=skip to leave them out."
            )
        log.warning("data: skipped %d unreadable file(s) (data.on_bad_file=skip):\n%s", len(bad), listing)
    assert class_names is not None
    return ImageFolder(root, class_names, splits, tuple(p for p, _ in bad), tuple(ignored))


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
    key = hashlib.sha256(repr(sorted(dict(images_per_class).items())).encode()).hexdigest()[:8]
    target = Path(path).expanduser() / key
    if not (target / "train").is_dir():
        with atomic_folder(target, lambda p: (p / "train").is_dir()) as tmp:
            _write_synthetic(tmp, images_per_class, seed)
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


def downloads(data_cfg: Mapping) -> bool:
    """Whether the data comes from the download: `data.path`, when given, is used instead (never ignored)."""
    return data_cfg["source"] == "download" and not data_cfg.get("path")


def resolve_data_path(data_cfg: Mapping) -> Path:
    """The local folder behind a `data` config: as given, generated, or downloaded."""
    if data_cfg["source"] == "synthetic":
        return ensure_synthetic(data_cfg["path"], data_cfg["images_per_class"])
    if downloads(data_cfg):
        return download_archive(str(data_cfg["url"]))
    return Path(str(data_cfg["path"])).expanduser()
