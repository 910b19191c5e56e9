"""What makes a file a bad image, found without decoding it: its name, its link, its bytes, the size its header
declares. Cheap enough to run on every file of every job (a scan reads each file once anyway, for its digest).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path


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


def valid_name(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, kept by Python as surrogates
        return False
    return True


@dataclass(frozen=True)
class Inspection:
    """What reading a file found, before `data.max_pixels` is applied: a problem of the file itself, or the
    image's pixel count and size from its header; `content` holds its bytes (empty when unreadable)."""

    problem: str | None
    pixels: int = 0
    size: str = ""
    content: bytes = b""
    digest: str = ""  # sha256 of the bytes: the file's part of a split's identity

    @classmethod
    def of(cls, problem: str | None, content: bytes, pixels: int = 0, size: str = "") -> Inspection:
        return cls(problem, pixels, size, content, hashlib.sha256(content).hexdigest())

    def problem_at(self, max_pixels: int) -> str | None:
        """The file's problem under `data.max_pixels=max_pixels`."""
        if self.problem is None and self.pixels > max_pixels:
            return f"{self.size}, over data.max_pixels={max_pixels:,} (decoded, it would take gigabytes of memory)"
        return self.problem


def inspect(path: Path) -> Inspection:
    """Read the file at `path` once and check it without decoding: the name, the link, the bytes' structure
    (`image_problem`) and the image's size from its header (a 20,000 x 20,000 PNG of a few hundred KB decodes
    to gigabytes)."""
    if not valid_name(path.name):
        return Inspection("file name is not valid UTF-8 (rename it)")
    if path.is_symlink() and not path.exists():
        return Inspection(f"broken symbolic link (to {shown(os.readlink(path))})")
    try:
        content = path.read_bytes()
    except OSError as exc:
        return Inspection(f"cannot be read ({exc.strerror or exc})")
    problem = image_problem(content)
    if problem is not None:
        return Inspection.of(problem, content)
    try:
        pixels, size = image_size(content)
    except Exception as exc:  # noqa: BLE001 - Pillow's errors for a header it cannot parse vary by format
        return Inspection.of(f"image header cannot be read ({type(exc).__name__}: {exc})", content)
    return Inspection.of(None, content, pixels, size)


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
        found = re.search(r"\((\d+) pixels\)", str(exc))
        if found is None:
            raise
        pixels = int(found.group(1))
        return pixels, f"{pixels:,} pixels"
    return width * height, f"{width} x {height} = {width * height:,} pixels"
