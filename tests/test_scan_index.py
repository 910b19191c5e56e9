"""The scan index: an unchanged file is not read again, and content identity keeps its promise anyway."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from harness import data
from harness.data import index
from harness.errors import HarnessError

COUNTS = {"train": 4, "validation": 2, "test": 2}  # per class, two classes: 16 files


@pytest.fixture
def folder(tmp_path) -> Path:
    """A generated folder old enough that its files' stats can be trusted (index.RACY_NS)."""
    made = data.ensure_synthetic(tmp_path / "gen", COUNTS)
    time.sleep(index.RACY_NS / 1e9 + 0.2)
    return made


def scan(folder: Path, cache: Path | None, **options) -> tuple[data.ImageFolder, list[str]]:
    """The scan and what its log said about the index."""
    import logging

    records: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger = logging.getLogger("harness.data.folders")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return data.scan_folder(folder, cache_dir=cache, **options), records
    finally:
        logger.removeHandler(handler)


def identities(scanned: data.ImageFolder) -> dict[str, str]:
    return {s: data.split_identity(v, scanned.class_names) for s, v in scanned.splits.items()}


def one_file(folder: Path) -> Path:
    return sorted((folder / "train").rglob("*.*"))[0]


def test_an_unchanged_folder_is_scanned_again_without_reading_a_file(folder, tmp_path):
    first, said = scan(folder, tmp_path / "cache")
    assert (tmp_path / "cache" / index.NAME).is_file() and not said  # every file read and recorded
    again, said = scan(folder, tmp_path / "cache")
    assert said == ["data: 16 file(s) unchanged since an earlier scan, 0 read"]
    assert identities(again) == identities(first) and again.splits["train"].files == first.splits["train"].files


def test_an_edit_in_place_that_keeps_size_and_mtime_is_a_new_identity(folder, tmp_path):
    before, _ = scan(folder, tmp_path / "cache")
    edited = one_file(folder)
    st = edited.stat()
    content = bytearray(edited.read_bytes())
    content[-3] ^= 0xFF  # inside the image data, before its end marker: still a whole JPEG, same size
    edited.write_bytes(bytes(content))
    os.utime(edited, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime put back; ctime moved, and only the kernel sets it
    assert (edited.stat().st_size, edited.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    after, said = scan(folder, tmp_path / "cache")
    assert said == ["data: 15 file(s) unchanged since an earlier scan, 1 read"]
    assert identities(after)["train"] != identities(before)["train"]
    assert identities(after)["validation"] == identities(before)["validation"]


def test_a_file_read_within_a_timestamp_tick_of_its_change_is_read_again(tmp_path):
    """git's racily clean entries: a write right after the read could keep the stat on a coarse filesystem."""
    fresh = data.ensure_synthetic(tmp_path / "gen", COUNTS)  # just written: within RACY_NS of the scan
    scan(fresh, tmp_path / "cache")
    _, said = scan(fresh, tmp_path / "cache")
    assert said == []  # no entry trusted: all 16 read again (and recorded with the later read time)
    time.sleep(index.RACY_NS / 1e9 + 0.2)
    _, said = scan(fresh, tmp_path / "cache")
    assert said == []  # read again, now long enough after the files' last change to be trusted from here on
    _, said = scan(fresh, tmp_path / "cache")
    assert said == ["data: 16 file(s) unchanged since an earlier scan, 0 read"]


def test_a_moved_copy_is_the_same_identity_and_the_limit_applies_to_indexed_files(folder, tmp_path):
    first, _ = scan(folder, tmp_path / "cache")
    moved = tmp_path / "elsewhere" / "photos"
    shutil.copytree(folder, moved)
    copy, _ = scan(moved, tmp_path / "cache")
    assert identities(copy) == identities(first)
    with pytest.raises(HarnessError, match="has no readable images"):  # the limit applies to what the index kept
        scan(folder, tmp_path / "cache", max_pixels=10)


def test_without_a_cache_there_is_no_index_and_every_file_is_read(folder, tmp_path):
    scan(folder, None)
    _, said = scan(folder, None)
    assert said == [] and not list(tmp_path.rglob(index.NAME))
