"""Datasets given as a list of files: a CSV with the columns path, label and split (`data=manifest
data.path=files.csv`), paths relative to the CSV's folder (or absolute), as large datasets often ship.

It is read as a folder is (`folders.scan_folder`): every file checked, bad files skipped and named or
stopping the job (`data.on_bad_file`), the scan index reused. Its order is a folder's: by class (class names
sorted), then file name; two files with one name in one class are ordered by their content, so the order
never depends on where a file lives. A manifest that lists a folder's files is therefore that folder's job,
with the same content identity, whatever the order of its rows.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from harness.data.checks import shown
from harness.data.folders import REQUIRED_SPLITS, SPLITS, ImageFolder, Split, report_bad_files
from harness.data.index import ScanIndex
from harness.errors import HarnessError

log = logging.getLogger(__name__)

COLUMNS = ("path", "label", "split")
SHOWN = 5  # rows named in an error; the rest are counted


def _listing(items: list[str]) -> str:
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def read_manifest(csv: Path):
    """The manifest's rows as strings, checked: its columns, its split names, no file listed twice."""
    import pandas as pd

    if not csv.is_file():
        raise HarnessError(
            f"data.path={shown(csv)!r} is not a file; data=manifest needs a CSV with the columns path, label, split"
        )
    try:
        table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (ValueError, UnicodeDecodeError) as exc:  # pandas' ParserError and EmptyDataError are ValueErrors
        raise HarnessError(f"data.path={shown(csv)!r} cannot be read as a CSV manifest: {exc}") from exc
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise HarnessError(
            f"data.path={shown(csv)!r} has no column {', '.join(repr(c) for c in missing)}; a manifest has the "
            f"columns path, label and split (found: {', '.join(repr(c) for c in table.columns)})"
        )
    rows = table.index[~table["split"].isin(SPLITS)]
    if len(rows):
        values = sorted(set(table.loc[rows, "split"]))
        raise HarnessError(
            f"data.path={shown(csv)!r}: split {_listing([repr(v) for v in values])} is not one of "
            f"{', '.join(SPLITS)} (rows {_listing([str(r + 2) for r in rows])}, counting the header as row 1)"
        )
    for split in REQUIRED_SPLITS:
        if not (table["split"] == split).any():
            raise HarnessError(f"data.path={shown(csv)!r} lists no {split} images; required splits: {REQUIRED_SPLITS}")
    blank = table.index[(table["path"] == "") | (table["label"] == "")]
    if len(blank):
        raise HarnessError(
            f"data.path={shown(csv)!r}: rows {_listing([str(r + 2) for r in blank])} have no path or label"
        )
    twice = table[table.duplicated("path", keep=False)]
    if len(twice):
        raise HarnessError(
            f"data.path={shown(csv)!r} lists a file more than once ({_listing(sorted(set(twice['path'])))}): "
            "in one split it would count twice, across splits it would test on training images"
        )
    return table


def scan_manifest(
    path: str | Path, on_bad_file: str = "skip", max_pixels: int = 100_000_000, cache_dir: Path | None = None
) -> ImageFolder:
    """The files a manifest lists, checked as a folder's are; HarnessError names the first problem."""
    csv = Path(path).expanduser().resolve()
    table = read_manifest(csv)
    root = csv.parent
    files = [root / p for p in table["path"]]  # an absolute path stays as it is
    absent = [p for p, f in zip(table["path"], files, strict=True) if not f.exists() and not f.is_symlink()]
    if absent:
        raise HarnessError(
            f"data.path={shown(csv)!r} lists {len(absent)} file(s) that do not exist (relative to {shown(root)}): "
            f"{_listing(absent)}"
        )
    class_names = tuple(sorted(set(table["label"])))
    if len(class_names) < 2:
        raise HarnessError(
            f"data.path={shown(csv)!r} has {len(class_names)} label(s) {list(class_names)}; a classifier needs >= 2"
        )
    index = ScanIndex(cache_dir, root)
    splits: dict[str, Split] = {}
    bad: list[tuple[Path, str]] = []
    for split in SPLITS:
        rows = table["split"] == split
        if not rows.any():
            continue
        kept = []
        for f, label in zip([f for f, r in zip(files, rows, strict=True) if r], table.loc[rows, "label"], strict=True):
            found = index.inspect(f)
            problem = found.problem_at(max_pixels)
            if problem is None:
                kept.append((class_names.index(label), f.name, found.digest, str(f), f))
            else:
                bad.append((f, problem))
        kept.sort()  # a folder's order: class, file name; then content, never the file's location
        empty = sorted(set(class_names) - {class_names[k[0]] for k in kept})
        if empty:
            raise HarnessError(f"data.path={shown(csv)!r}: no readable {split} image of class {_listing(empty)}")
        labels = np.asarray([k[0] for k in kept], dtype=np.int32)
        splits[split] = Split(tuple(k[4] for k in kept), labels, tuple(k[2] for k in kept))
    index.save()
    report_bad_files(bad, csv, on_bad_file)
    return ImageFolder(root, class_names, splits, tuple(p for p, _ in bad), ())
