"""Datasets as a list of files: a manifest of a folder's files is that folder's job, whatever its rows' order."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from conftest import compose

from harness import data
from harness.errors import HarnessError
from harness.jobs import inputs

COUNTS = {"train": 6, "validation": 3, "test": 3}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return data.ensure_synthetic(tmp_path_factory.mktemp("gen"), COUNTS)


def write_manifest(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["path", "label", "split"])
        writer.writerows(rows)
    return path


def rows_of(folder: Path, relative_to: Path) -> list[tuple[str, str, str]]:
    """Every image of `folder` as manifest rows, paths relative to `relative_to`, in a scrambled order."""
    rows = [(str(f.relative_to(relative_to)), f.parent.name, f.parent.parent.name) for f in sorted(folder.rglob("*.*"))]
    return rows[::-1][1::2] + rows[::-1][0::2]


def job(*overrides: str):
    return inputs.prepare(compose(*overrides, "cache=false", "backbone.weights=null"))


def test_a_manifest_of_a_folder_is_that_folders_job(folder, tmp_path):
    listed = write_manifest(folder.parent / "files.csv", rows_of(folder, folder.parent))
    from_folder, from_list = job("data=folder", f"data.path={folder}"), job("data=manifest", f"data.path={listed}")
    assert from_list.identity == from_folder.identity
    assert from_list.folder.class_names == from_folder.folder.class_names
    for split in ("train", "validation", "test"):
        assert from_list.splits[split].files == from_folder.splits[split].files  # the same order: the same training
    half = job("data=manifest", f"data.path={listed}", "data_fraction=0.5")
    assert half.identity == job("data=folder", f"data.path={folder}", "data_fraction=0.5").identity


def test_two_files_with_one_name_in_one_class_are_ordered_by_content(folder, tmp_path):
    """The rule for two files with one name: content decides, so the rows' order and the folders' names do not."""
    copy = tmp_path / "data"
    shutil.copytree(folder, copy)
    first = sorted((copy / "train").glob("*/*"))[0]
    other = sorted(p for p in (copy / "train" / first.parent.name).iterdir() if p != first)[0]
    rows = rows_of(copy, copy)
    (copy / "more").mkdir()
    shutil.copy(other, copy / "more" / first.name)  # another image under the same name, same class
    extra = (f"more/{first.name}", first.parent.name, "train")
    a = job("data=manifest", f"data.path={write_manifest(copy / 'a.csv', [*rows, extra])}")
    b = job("data=manifest", f"data.path={write_manifest(copy / 'b.csv', [extra, *rows[::-1]])}")
    assert a.identity == b.identity and a.splits["train"].digests == b.splits["train"].digests
    named = [f for f in a.splits["train"].files if f.name == first.name]
    assert len(named) == 2 and named == sorted(
        named, key=lambda f: a.splits["train"].digests[a.splits["train"].files.index(f)]
    )


def test_a_manifests_mistakes_are_named(folder, tmp_path):
    rows = rows_of(folder, folder.parent)
    cases = {
        "no column 'split'": [r[:2] for r in rows],
        "split 'training' is not one of train, validation, test (rows 2": [
            (rows[0][0], rows[0][1], "training"),
            *rows[1:],
        ],
        "lists 1 file(s) that do not exist": [("gone/x.jpg", rows[0][1], "train"), *rows],
    }
    for needle, table in cases.items():
        path = folder.parent / f"mistake{len(needle)}.csv"  # beside the folder: the rows are relative to it
        with path.open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["path", "label", "split"][: len(table[0])])
            writer.writerows(table)
        with pytest.raises(HarnessError, match=None) as info:
            data.scan_manifest(path)
        assert needle in str(info.value), str(info.value)
