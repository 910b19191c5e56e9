"""Every check a job makes before it trains, in the order that fails fastest: what a sweep runs on each of its
jobs before any trains (`harness.sweep.lifecycle.start`), and a single job's dry run."""

from __future__ import annotations

from harness.config import Config
from harness.jobs import plan
from harness.jobs.inputs import Prepared, fetch, needs_pretrained, prepare
from harness.training import backbones
from harness.training.runtime import quiet_tensorflow


def check(cfg: Config) -> Prepared:
    """Every check a job makes before training: what a sweep runs on each job first (the built backbone is kept)."""
    job = prepare(cfg)
    fetch(cfg)  # ImageNet weights (tried once per process)
    quiet_tensorflow()
    weights = cfg.backbone.weights
    if needs_pretrained(cfg) and weights not in (None, "imagenet"):  # imagenet: checked by Keras on download
        backbones.build_once(cfg.backbone.name, str(weights), cfg.backbone.image_size)  # the job reuses it
    plan.check_disk(job)
    return job
