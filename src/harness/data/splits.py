"""Which files a job trains on: a stratified, seeded, nested subsample of the training split, and a split's
identity by content (what job identities and cache keys are made of)."""

from __future__ import annotations

import hashlib

import numpy as np

from harness.data.folders import Split
from harness.errors import HarnessError


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
