"""A job's inputs checked and named: config values, the data folder, the subsample, the weights, the identity.

Everything here is cheap (no model, no store): it is what a sweep runs on every job before any trains,
and what a job runs again on itself before it opens a run.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from harness import data
from harness.config import Config, load
from harness.errors import HarnessError
from harness.jobs import cache, identity
from harness.training import backbones, specs


@dataclass
class Prepared:
    """A job whose config and data passed their checks, with its content identity."""

    cfg: Config
    identity: str
    folder: data.ImageFolder
    train: data.Split

    @property
    def splits(self) -> dict[str, data.Split]:
        """The subsampled train split and the other splits, whole."""
        return {"train": self.train, **{s: v for s, v in self.folder.splits.items() if s != "train"}}

    def split_identities(self) -> dict[str, str]:
        return {s: data.split_identity(v, self.folder.class_names) for s, v in self.splits.items()}

    def summary(self) -> dict[str, object]:
        """What the run must remember about its data: where, which classes, which files (hash), how many."""
        folder = self.folder
        return {
            "data_root": str(folder.root),
            "class_names": list(folder.class_names),
            "train_files_hash": data.split_identity(self.train, folder.class_names),
            "test_split": "present" if folder.has_test else "absent",
            "bad_files_skipped": len(folder.bad_files),
            "files_ignored": len(folder.ignored_files),
            "n_train": len(self.train),
            "n_train_available": len(folder.splits["train"]),
            **{f"n_{s}": len(v) for s, v in folder.splits.items() if s != "train"},
        }

    def test_images(self) -> tuple[Path, list[Path], object, list[str]] | None:
        """(data root, test files, their labels, class names) for the per-image predictions; None without a test
        split."""
        split = self.folder.splits.get("test")
        if split is None:
            return None
        return self.folder.root, list(split.files), split.labels, list(self.folder.class_names)


@functools.lru_cache(maxsize=8)
def _scan(path: str, on_bad_file: str, max_pixels: int, index_dir: str | None, fingerprint: str) -> data.ImageFolder:
    return data.scan_folder(path, on_bad_file, max_pixels, _index(index_dir))


def _index(index_dir: str | None) -> Path | None:
    return None if index_dir is None else Path(index_dir)


def _fingerprint(path: Path) -> str:
    """Names and stats (size, mtime, ctime, inode) of everything under `path`: a scan is reused in this process
    (every job of a sweep) only while none of them changed. Costs a stat per file, not a read."""
    entries = []
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                st = os.stat(os.path.join(folder, name))
            except OSError:  # a broken link: the scan names it; its presence is what counts here
                st = os.lstat(os.path.join(folder, name))
            entries.append(
                (os.fsencode(folder), os.fsencode(name), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
            )
    return identity.digest(sorted(entries))


OFFLINE_ALTERNATIVES = (
    "Without network, use local files: data=folder data.path=/path/to/images (train/, validation/, "
    "[test/], one subfolder per class) or data=synthetic; backbone.weights=/path/to/weights.h5 (a Keras "
    "include_top=False weights file) or backbone.weights=null (random init)."
)


@functools.lru_cache(maxsize=16)
def _download_data(url: str) -> str | None:
    """Why the data archive could not be fetched, or None; tried once per process (every job of a sweep)."""
    from harness.training.runtime import quiet_tensorflow

    quiet_tensorflow()  # keras.utils.get_file imports TensorFlow
    try:
        data.download_archive(url)
    except HarnessError as exc:
        return f"data: {exc}"
    return None


@functools.lru_cache(maxsize=16)
def _download_weights(name: str, image_size: int) -> str | None:
    """Why the ImageNet weights of `name` could not be fetched, or None. Building the backbone fetches them
    into Keras' cache (KERAS_HOME) and keeps the model for the job."""
    from harness.training.runtime import quiet_tensorflow

    quiet_tensorflow()
    try:
        backbones.build_once(name, "imagenet", image_size)
    except Exception as exc:  # noqa: BLE001 - Keras reports a failed download as a bare Exception
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        spec = backbones.get_spec(name)
        home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser()
        return (
            f"backbone.weights=imagenet: could not download {name}'s ImageNet weights ({first}); Keras fetches "
            f"{spec.weights_file} from {spec.weights_url} into {home / 'models'}: put it there from a machine "
            "with network, or pass its path as backbone.weights"
        )
    return None


def fetch(cfg: Config) -> None:
    """Try each download the job needs (the data archive, ImageNet weights) once, before any job runs, and
    name everything that could not be fetched in one error, with the local alternatives."""
    failures = []
    if data.downloads(cfg.data):
        failures.append(_download_data(str(cfg.data.url)))
    if needs_pretrained(cfg) and cfg.backbone.weights == "imagenet":
        failures.append(_download_weights(str(cfg.backbone.name), int(cfg.backbone.image_size)))
    failed = [f for f in failures if f]
    if failed:
        raise HarnessError(
            "could not download what this job needs:\n  - " + "\n  - ".join(failed) + "\n" + OFFLINE_ALTERNATIVES
        )


def check_cache_dir(cfg: Config) -> None:
    """A cache folder that cannot be written (a read-only share, another user's folder) is named before any
    job trains, rather than failing every job after its first features were built."""
    if cfg.cache:
        cache.check_writable(str(cfg.cache_dir))


def prepare(cfg: Config) -> Prepared:
    """Check the config's values, the data folder (fetched first when it is an archive), draw the subsample
    and name the job by content. Local problems are reported before any download is tried."""
    cfg = load(cfg)  # a typed config is only checked; a DictConfig (the API, tests) is converted first
    check_cache_dir(cfg)
    if data.downloads(cfg.data):
        fetch(cfg)  # the archive, and the weights with it: one message names every download that failed
    path = data.resolve_data_path(cfg.data)
    index_dir = str(cfg.cache_dir) if cfg.cache else None  # the scan index lives with the cache (data.index)
    if cfg.data.source == "manifest":  # read each time: the listed files' stats are what a reuse would check
        folder = data.scan_manifest(path, cfg.data.on_bad_file, int(cfg.data.max_pixels), _index(index_dir))
    else:
        folder = _scan(str(path), cfg.data.on_bad_file, int(cfg.data.max_pixels), index_dir, _fingerprint(path))
    train = data.subsample(folder.splits["train"], cfg.data_fraction, cfg.seed, folder.class_names)
    job = Prepared(cfg, "", folder, train)
    job.identity = identity.job_identity(cfg, job.split_identities(), folder.class_names)
    return job


def needs_pretrained(cfg: Config) -> bool:
    return specs.needs_pretrained([str(r) for r in cfg.regimes])
