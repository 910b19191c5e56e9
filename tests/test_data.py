"""Data folder discovery, subsampling and decoding on the real photographs and on generated folders."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest

from harness import data
from harness.errors import HarnessError


def test_real_folder_has_the_seeds_layout(cats_dogs):
    folder = data.scan_folder(cats_dogs)
    assert folder.class_names == ("cats", "dogs")
    assert {s: len(v) for s, v in folder.splits.items()} == {"train": 2000, "validation": 1000, "test": 1000}
    assert folder.splits["train"].class_counts(2) == [1000, 1000]
    assert folder.bad_files == ()


def test_subsample_is_stratified_seeded_and_identified(cats_dogs):
    folder = data.scan_folder(cats_dogs)
    train = folder.splits["train"]
    a = data.subsample(train, 0.1, seed=3, class_names=folder.class_names)
    b = data.subsample(train, 0.1, seed=3, class_names=folder.class_names)
    c = data.subsample(train, 0.1, seed=4, class_names=folder.class_names)
    assert a.class_counts(2) == [100, 100]
    assert a.files == b.files
    assert data.split_identity(a, folder.class_names) == data.split_identity(b, folder.class_names)
    assert data.split_identity(a, folder.class_names) != data.split_identity(c, folder.class_names)
    assert data.subsample(train, 1.0, 0, folder.class_names) is train


def test_fraction_too_small_for_a_class_is_an_error(cats_dogs):
    folder = data.scan_folder(cats_dogs)
    with pytest.raises(HarnessError, match=r"data_fraction=0.0001 leaves class 'cats' with no training image"):
        data.subsample(folder.splits["train"], 0.0001, 0, folder.class_names)


def test_missing_test_split_is_allowed_and_reported(tmp_path, caplog):
    root = data.ensure_synthetic(tmp_path, {"train": 3, "validation": 2})
    with caplog.at_level("INFO", logger="harness.data.folders"):
        folder = data.scan_folder(root)
    assert not folder.has_test and set(folder.splits) == {"train", "validation"}
    assert folder.class_names == ("disks", "squares")
    assert f"no test/ split in {root.resolve()}; test metrics will be reported as absent" in caplog.text


def test_synthetic_set_is_generated_once(tmp_path):
    first = data.ensure_synthetic(tmp_path, {"train": 2, "validation": 2, "test": 2})
    stamp = (first / "train" / "disks" / "disks.0.jpg").stat().st_mtime_ns
    again = data.ensure_synthetic(tmp_path, {"train": 2, "validation": 2, "test": 2})
    assert again == first
    assert (again / "train" / "disks" / "disks.0.jpg").stat().st_mtime_ns == stamp


def test_load_images_decodes_and_resizes(cats_dogs):
    folder = data.scan_folder(cats_dogs)
    files = folder.splits["test"].files[:5]
    x = data.load_images(files, 64)
    assert x.shape == (5, 64, 64, 3) and x.dtype == np.uint8
    assert 20 < x.mean() < 235  # real photographs, not blank


def test_missing_folder_and_split_are_named(tmp_path):
    with pytest.raises(HarnessError, match="is not a folder"):
        data.scan_folder(tmp_path / "nowhere")
    root = data.ensure_synthetic(tmp_path / "s", {"train": 2, "validation": 2})
    shutil.rmtree(root / "validation")
    with pytest.raises(HarnessError, match=r"has no validation/ folder"):
        data.scan_folder(root)


def _jpeg(size: int = 24, **save: object) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 90)).save(out, "JPEG", **save)
    return out.getvalue()


def _segment(content: bytes, wanted: int) -> int:
    """Offset of the first marker segment `wanted` (0xDA: start of scan) in a JPEG."""
    i = 2
    while content[i + 1] != wanted:
        i += 2 + int.from_bytes(content[i + 2 : i + 4], "big")
    return i


def test_jpeg_check_accepts_trailing_bytes_and_refuses_what_is_broken():
    whole = _jpeg()
    assert data.image_problem(whole) is None
    assert data.image_problem(whole + b"\x00" * 500) is None  # a camera trailer after the end marker
    assert data.image_problem(whole[:-2]) == "truncated JPEG (no end-of-image marker)"
    assert data.image_problem(whole[:30]) == "truncated JPEG (ends inside its headers)"
    garbled = whole[:20] + b"\x00" * 40 + whole[60:]  # headers overwritten: no marker where one must be
    assert data.image_problem(garbled).startswith("corrupt JPEG (no segment marker at byte")


def test_jpeg_check_is_not_fooled_by_a_thumbnails_end_marker():
    """An EXIF thumbnail is a whole JPEG inside the header: its FF D9 must not vouch for a cut main image."""
    thumbnail = _jpeg(8)
    exif = b"Exif\x00\x00" + thumbnail
    whole = _jpeg(64)
    app1 = b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif
    with_thumbnail = whole[:2] + app1 + whole[2:]
    assert data.image_problem(with_thumbnail) is None
    scan = _segment(with_thumbnail, 0xDA)
    assert data.image_problem(with_thumbnail[: scan + 40]) == "truncated JPEG (no end-of-image marker)"


def test_smaller_fractions_are_nested_in_larger_ones(tmp_path):
    """One seeded permutation per class, a fraction takes its first files: 10% within 25% within 50% within all,
    stratified as before, and another seed draws other files."""
    folder = data.scan_folder(data.ensure_synthetic(tmp_path, {"train": 40, "validation": 2}))
    train, names = folder.splits["train"], folder.class_names
    fractions = (0.1, 0.25, 0.5, 1.0)
    picks = {f: data.subsample(train, f, seed=5, class_names=names) for f in fractions}
    assert [picks[f].class_counts(2) for f in fractions] == [[4, 4], [10, 10], [20, 20], [40, 40]]
    for small, large in zip(fractions, fractions[1:], strict=False):
        assert set(picks[small].files) < set(picks[large].files), (small, large)
        assert set(picks[small].digests) <= set(picks[large].digests)
    assert list(picks[0.25].files) == sorted(picks[0.25].files)  # file order, as before
    other = data.subsample(train, 0.25, seed=6, class_names=names)
    assert set(other.files) != set(picks[0.25].files)
    assert set(data.subsample(train, 0.1, seed=6, class_names=names).files) < set(other.files)
