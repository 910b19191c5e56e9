"""Image folders in Chollet's layout: discovery and checks of every file.

A data folder holds `train/`, `validation/` and optionally `test/`, each with one subfolder per class.
Everything that can be wrong with it is found here, by reading file names and bytes, before any model is
built: bad files are named and skipped or stop the job (`data.on_bad_file`), other file types are counted.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from harness.data.checks import shown, valid_name
from harness.data.index import ScanIndex
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
    ignored_files: tuple[Path, ...] = field(default=())  # not of an image type the harness reads (.webp, .tif, ...)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_test(self) -> bool:
        return "test" in self.splits


def _list_files(class_dir: Path) -> tuple[list[Path], list[Path]]:
    """(candidate images by suffix, other files): links count as files, broken ones too (named bad later)."""
    entries = sorted(p for p in class_dir.iterdir() if not p.name.startswith(".") and not p.is_dir())
    images = [p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES]
    return images, [p for p in entries if p.suffix.lower() not in IMAGE_SUFFIXES]


def scan_folder(
    path: str | Path, on_bad_file: str = "skip", max_pixels: int = 100_000_000, cache_dir: Path | None = None
) -> ImageFolder:
    """Read a folder in Chollet's layout and check it, raising HarnessError with the first problem. With a
    `cache_dir`, files unchanged since an earlier scan are taken from its scan index unread (`data.index`)."""
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

    index = ScanIndex(cache_dir, root)
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
        unnamed = [shown(split_dir / n) for n in names if not valid_name(n)]
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
                found = index.inspect(f)  # read once (or unchanged since): checked, and its digest is its identity
                problem = found.problem_at(max_pixels)
                if problem is None:
                    files.append(f)
                    labels.append(label)
                    digests.append(found.digest)
                    good += 1
                else:
                    bad.append((f, problem))
            if not good:
                raise HarnessError(
                    f"class folder {shown(split_dir / name)} has no readable images "
                    f"(looked for {', '.join(IMAGE_SUFFIXES)}; {len(candidates)} candidate file(s))"
                )
        splits[split] = Split(tuple(files), np.asarray(labels, dtype=np.int32), tuple(digests))

    index.save()
    if index.reused:
        log.info("data: %d file(s) unchanged since an earlier scan, %d read", index.reused, index.read)
    if ignored:
        by_suffix = Counter(p.suffix.lower() or "(none)" for p in ignored)
        log.warning(
            "data: left out %d file(s) that are not %s images (%s), e.g. %s",
            len(ignored),
            "/".join(s.lstrip(".") for s in IMAGE_SUFFIXES),
            ", ".join(f"{n} {suffix}" for suffix, n in sorted(by_suffix.items())),
            ", ".join(shown(p.relative_to(root)) for p in ignored[:3]),
        )
    report_bad_files(bad, root, on_bad_file)
    assert class_names is not None
    return ImageFolder(root, class_names, splits, tuple(p for p, _ in bad), tuple(ignored))


def report_bad_files(bad: list[tuple[Path, str]], where: Path, on_bad_file: str) -> None:
    """Name every unreadable file: a warning when they are skipped, HarnessError when data.on_bad_file=stop."""
    if not bad:
        return
    listing = "\n".join(f"  {shown(p)}: {why}" for p, why in bad)
    if on_bad_file == "stop":
        raise HarnessError(
            f"{len(bad)} unreadable image file(s) in {shown(where)} (data.on_bad_file=stop):\n{listing}\n"
            "Remove them, or set data.on_bad_file=skip to leave them out."
        )
    log.warning("data: skipped %d unreadable file(s) (data.on_bad_file=skip):\n%s", len(bad), listing)
