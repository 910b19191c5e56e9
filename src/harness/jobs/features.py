"""Frozen-stage outputs and decoded images by content: cache keys, and features built by the cheapest route.

A job's images, each cut's features and its head phase are cache entries keyed by what determines them
(the photographs' content, the weights' content, the backbone, the cut, the precision; for the head
phase its training settings, its epochs after any step budget and its stopping rule), so jobs and sweeps
that share them compute them once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from harness import data
from harness.config import Config
from harness.jobs import cache, identity
from harness.jobs.inputs import Prepared
from harness.training import backbones, runtime, specs
from harness.training.regime import Recipe

if TYPE_CHECKING:
    from harness.training import trainer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CacheKeys:
    """Every cache entry a job reads or writes, by content."""

    images: dict[str, str]  # split -> key
    features: dict[str, dict[str, str]]  # cut (backbones.TOP, POOLED or a boundary) -> split -> key
    states: dict[str, str]  # regime -> its stored state's key (the head phase, shared by jobs differing after it)
    common: dict[str, Any]  # what every features key of this job shares (backbone, weights, precision)

    def feature_key(self, cut: str, split: str) -> str:
        """The key of any cut's features (not only this job's), to find reusable shallower cuts."""
        return cache.make_key("features", {**self.common, "images": self.images[split], "cut": cut})


def cache_keys(job: Prepared) -> CacheKeys:
    cfg = job.cfg
    size = cfg.backbone.image_size
    splits = job.split_identities()
    images = {s: cache.make_key("images", {"files": ident, "size": size}) for s, ident in splits.items()}
    weights = identity.weights_identity(cfg.backbone.weights, cfg.backbone.name)
    spec = backbones.get_spec(cfg.backbone.name)
    common = {
        "backbone": cfg.backbone.name,
        "architecture": {"application": spec.application, "preprocessing": spec.module},  # the spec used
        "weights": weights if weights is not None else f"random-seed{cfg.seed}",
        "precision": runtime.resolve_precision(cfg.precision, cfg.backbone.name),  # auto: what this job uses
    }
    recipe = Recipe.from_cfg(cfg)
    chosen = specs.chosen(cfg.regimes)
    cuts = specs.cuts(cfg.regimes, recipe)
    features = {
        cut: {s: cache.make_key("features", {**common, "images": images[s], "cut": cut}) for s in images}
        for cut in cuts
    }
    states = {}
    for regime in chosen:
        if regime.reuse is None:
            continue
        (cut,) = regime.cuts(recipe)  # a reused state trains on one cut's features, or on augmented images
        parts = regime.reuse.key_parts(recipe, len(job.train), list(job.folder.class_names))
        inputs = images if cfg.augment else features[cut]
        states[regime.name] = cache.make_key(
            regime.reuse.kind, {**common, "regime": regime.name, "inputs": inputs, **parts}, regime.train.__module__
        )
    return CacheKeys(images, features, states, common)


def load_arrays(job: Prepared, store: cache.ArrayCache, keys: CacheKeys) -> trainer.Arrays:
    """Every chosen image decoded and resized once, reused from the cache when an earlier job did it."""
    from harness.training import trainer

    size = job.cfg.backbone.image_size
    splits = job.splits
    t0 = time.perf_counter()

    def decode(missing: list[str], allocate: cache.Allocate) -> dict[str, np.ndarray]:
        shape = {s: (len(splits[s].files), size, size, 3) for s in missing}
        return {s: data.load_images(splits[s].files, size, allocate(s, shape[s], np.uint8)) for s in missing}

    x = store.arrays(keys.images, decode)  # a disabled cache writes them to unlinked spill files
    log.info(
        "data: %s images at %d px ready in %.1fs", {s: len(v) for s, v in x.items()}, size, time.perf_counter() - t0
    )
    return trainer.Arrays({s: x[s] for s in splits}, {s: v.labels for s, v in splits.items()}, job.folder.num_classes)


def cached_features(store: cache.ArrayCache, keys: CacheKeys, cfg: Config, base):
    """The Trainer's features hook: frozen-stage outputs from the cache, built by the cheapest route.

    A missing cut is computed from the deepest cached shallower cut through the segment between them,
    and only from pixels when there is none. The top features of a job that also fine-tunes are built
    through its fine-tuning cut, so one forward pass over the images serves both, and a later job with a
    deeper cut runs only the segment above the cached one.
    """
    import keras

    from harness.training import forward, models, trainer

    boundaries = backbones.get_spec(cfg.backbone.name).boundaries
    order = [*boundaries, *backbones.TOP_CUTS]
    recipe = Recipe.from_cfg(cfg)
    # the shallowest boundary a chosen regime trains from: top features are built through it (one pass for both)
    through = min((c for c in specs.cuts(cfg.regimes, recipe) if c in boundaries), key=boundaries.index, default=None)

    def deepest_cached_below(cut: str, split: str) -> str | None:
        for c in reversed(order[: order.index(cut)]):
            if store.has(keys.feature_key(c, split)):
                return c
        return None

    def from_source(source: str, cut: str, splits: list[str], allocate: cache.Allocate) -> dict[str, np.ndarray] | None:
        """Run the segment source -> cut over the cached source features of `splits`; None when a source entry
        turns out unreadable (it is discarded)."""
        if source == backbones.TOP:  # pooled from top: the pooling alone
            seg = models.pooling(base.output.shape[1:])
        else:
            seg = backbones.segment(base, source, None if cut in backbones.TOP_CUTS else cut)
            if cut == backbones.POOLED:
                seg = keras.Model(seg.input, models.pooling(seg.output.shape[1:])(seg.output))
        # reading the source is part of building `cut`: not counted as cache hits of this run
        src = {s: store.load(keys.feature_key(source, s)) for s in splits}
        loaded = {s: v for s, v in src.items() if v is not None}
        if len(loaded) < len(src):
            return None
        return forward.forward_by_split(seg, loaded, allocate)

    def features(stage, arrays: trainer.Arrays, cut: str) -> dict[str, np.ndarray]:
        if cut not in keys.features or not store.enabled:  # pixels (the stage is only preprocessing), or no cache
            return store.temporary(arrays.splits, lambda _, allocate: trainer.compute_features(stage, arrays, allocate))

        def build(missing: list[str], allocate: cache.Allocate) -> dict[str, np.ndarray]:
            top = cut in backbones.TOP_CUTS
            if top and through and any(deepest_cached_below(cut, s) is None for s in missing):
                lower, _ = backbones.split_at(base, through)
                features(models.frozen_stage(cfg.backbone.name, cfg.backbone.image_size, lower), arrays, through)
            by_source: dict[str | None, list[str]] = {}
            for s in missing:  # each split from its own deepest cached cut: subsamples differ, eval splits don't
                by_source.setdefault(deepest_cached_below(cut, s), []).append(s)
            out = {}
            for source, splits in by_source.items():
                t0 = time.perf_counter()
                derived = None if source is None else from_source(source, cut, splits, allocate)
                if derived is None:  # from pixels (also when the source entry turned out unreadable)
                    source, derived = None, trainer.compute_features(stage, arrays.subset(splits), allocate)
                out.update(derived)
                n, seconds = sum(len(v) for v in derived.values()), time.perf_counter() - t0
                log.info(
                    "features@%s: %s from %s (%d images in %.1fs, %.0f images/s)",
                    cut,
                    "/".join(splits),
                    "pixels" if source is None else f"cached features@{source} through the segment between",
                    n,
                    seconds,
                    n / max(seconds, 1e-9),
                )
            return out

        # only the splits asked for: with augmentation the training images are never staged, only the held-out ones
        return store.arrays({s: k for s, k in keys.features[cut].items() if s in arrays.x}, build)

    return features
