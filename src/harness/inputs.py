"""A job's inputs checked and named: config values, the data folder, the subsample, the weights, the identity.

Everything here is cheap (no model, no store): it is what a sweep runs on every job before any trains,
and what a job runs again on itself before it opens a run.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from harness import backbones, data, identity
from harness.config import validate


@dataclass
class Prepared:
    """A job whose config and data passed their checks, with its content identity."""

    cfg: DictConfig
    identity: str
    folder: data.ImageFolder
    train: data.Split

    @property
    def splits(self) -> dict[str, data.Split]:
        """The subsampled train split and the other splits, whole."""
        return {"train": self.train, **{s: v for s, v in self.folder.splits.items() if s != "train"}}

    def split_identities(self) -> dict[str, str]:
        return {s: data.split_identity(v, self.folder.class_names) for s, v in self.splits.items()}


@functools.lru_cache(maxsize=8)
def _scan(path: str, on_bad_file: str, fingerprint: str) -> data.ImageFolder:
    return data.scan_folder(path, on_bad_file)


def _fingerprint(path: Path) -> str:
    """Names, sizes and modification times of everything under `path`: a scan is reused in this process
    (every job of a sweep) only while none of them changed. Costs a stat per file, not a read."""
    entries = []
    for folder, _, names in os.walk(path):
        for name in names:
            st = os.stat(os.path.join(folder, name))
            entries.append((folder, name, st.st_size, st.st_mtime_ns))
    return identity.digest(sorted(entries))


def prepare(cfg: DictConfig) -> Prepared:
    """Validate the config and the data folder, draw the subsample and name the job by content."""
    validate(cfg)
    path = data.resolve_data_path(cfg.data)
    folder = _scan(str(path), cfg.data.on_bad_file, _fingerprint(path))
    train = data.subsample(folder.splits["train"], cfg.data_fraction, cfg.seed, folder.class_names)
    job = Prepared(cfg, "", folder, train)
    job.identity = identity.job_identity(cfg, job.split_identities(), folder.class_names)
    return job


def needs_pretrained(cfg: DictConfig) -> bool:
    return bool({"frozen", "finetune"} & set(cfg.regimes))


def check(cfg: DictConfig) -> Prepared:
    """Every check a job makes before training: what a sweep runs on each job first (the built backbone is kept)."""
    from harness import plan
    from harness.runtime import quiet_tensorflow

    job = prepare(cfg)
    quiet_tensorflow()
    weights = cfg.backbone.weights
    if needs_pretrained(cfg) and weights not in (None, "imagenet"):  # imagenet: checked by Keras on download
        backbones.build_once(cfg.backbone.name, str(weights), cfg.backbone.image_size)  # the job reuses it
    plan.check_feature_memory(job)
    return job
