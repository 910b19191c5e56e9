"""Data folder discovery, subsampling and decoding on the real photographs and on generated folders."""

from __future__ import annotations

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


def test_missing_test_split_is_allowed_and_reported(tmp_path):
    root = data.ensure_synthetic(tmp_path, {"train": 3, "validation": 2})
    folder = data.scan_folder(root)
    assert not folder.has_test
    assert folder.class_names == ("disks", "squares")


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
