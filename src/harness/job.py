"""One job of a study: check everything, then train the requested regimes inside MLflow runs.

Order matters: every check that can fail on user input (config, data folder, weights file, store)
runs before the first MLflow run is opened or any image is decoded, so bad input leaves nothing behind.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from omegaconf import DictConfig, OmegaConf

from harness import backbones, cache, data, figures, tracking
from harness.config import config_hash, validate

if TYPE_CHECKING:  # Keras is imported only once a job is past its checks: bad input fails fast
    from harness import regimes

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """A job whose config and data passed their checks."""

    cfg: DictConfig
    cfg_hash: str
    folder: data.ImageFolder
    train: data.Split

    @property
    def splits(self) -> dict[str, data.Split]:
        """The subsampled train split and the other splits, whole."""
        return {"train": self.train, **{s: v for s, v in self.folder.splits.items() if s != "train"}}


@functools.lru_cache(maxsize=8)
def _scan(path: str, on_bad_file: str) -> data.ImageFolder:
    return data.scan_folder(path, on_bad_file)


def prepare(cfg: DictConfig) -> Prepared:
    """Validate the config and the data folder and draw the subsample: cheap, no model, no store."""
    validate(cfg)
    folder = _scan(str(data.resolve_data_path(cfg.data)), cfg.data.get("on_bad_file", "skip"))
    train = data.subsample(folder.splits["train"], cfg.data_fraction, cfg.seed, folder.class_names)
    return Prepared(cfg, config_hash(cfg), folder, train)


def needs_pretrained(cfg: DictConfig) -> bool:
    return bool({"frozen", "finetune"} & set(cfg.regimes))


def check(cfg: DictConfig) -> None:
    """Every check a job makes before training: what a sweep runs on each job first (the built backbone is kept)."""
    prepare(cfg)
    weights = cfg.backbone.weights
    if needs_pretrained(cfg) and weights not in (None, "imagenet"):  # imagenet: checked by Keras on download
        backbones.build_once(cfg.backbone.name, str(weights), cfg.backbone.image_size)  # the job reuses it


# --- cache keys and the dry-run plan ---------------------------------------------------------------

# Rough forward cost per image at 224 px in GFLOP (2 x multiply-adds), for the dry run's estimate.
FORWARD_GFLOP_224 = {"vgg16": 30.7, "mobilenetv2": 0.6}
# What this 2-core machine sustains, GFLOP/s: inference from benchmarks/RESULTS.md (MobileNetV2 at 160 px,
# 48 img/s x 0.306 GFLOP), training from the tf_mobilenetv2 study's scratch epochs (forward + backward,
# counted as 3 x forward, ~4 min for 2,000 train + 1,000 validation images under load).
FORWARD_GFLOPS = 15.0
TRAIN_GFLOPS = 10.0


@functools.lru_cache(maxsize=8)
def _digest(path: str) -> str:
    return cache.file_digest(path)


def weights_identity(cfg: DictConfig) -> str:
    """What the pretrained weights are, for cache keys: file content, Keras' ImageNet set, or seeded random."""
    weights = cfg.backbone.weights
    if weights is None:
        return f"random-seed{cfg.seed}"
    if weights == "imagenet":
        return f"imagenet-keras{metadata.version('keras')}"
    return _digest(str(Path(str(weights)).expanduser().resolve()))


@dataclass(frozen=True)
class CacheKeys:
    """Every cache entry a job reads or writes, by content."""

    images: dict[str, str]  # split -> key
    features: dict[str, dict[str, str]]  # cut ("top", "pooled" or unfreeze_at) -> split -> key
    head: str | None  # the head phase shared by jobs differing only in unfreeze_at / lr
    common: dict[str, str]  # what every features key of this job shares (backbone, weights, precision)

    def feature_key(self, cut: str, split: str) -> str:
        """The key of any cut's features (not only this job's), to find reusable shallower cuts."""
        return cache.make_key("features", {**self.common, "images": self.images[split], "cut": cut})


def cache_keys(job: Prepared) -> CacheKeys:
    cfg = job.cfg
    size = cfg.backbone.image_size
    images = {
        s: cache.make_key("images", {"files": data.files_identity(v), "size": size}) for s, v in job.splits.items()
    }
    common = {
        "backbone": cfg.backbone.name,
        "weights": weights_identity(cfg),
        "precision": cfg.get("precision", "fp32"),
        "keras": metadata.version("keras"),
    }
    frozen_cut = backbones.frozen_cut(cfg.head.pooling, cfg.augment)
    cuts = [c for c, regime in ((frozen_cut, "frozen"), (cfg.unfreeze_at, "finetune")) if regime in cfg.regimes]
    features = {
        cut: {s: cache.make_key("features", {**common, "images": images[s], "cut": cut}) for s in images}
        for cut in cuts
    }
    head = None
    if "frozen" in cfg.regimes:
        inputs = images if cfg.augment else features[frozen_cut]
        head = cache.make_key(
            "head",
            {
                **common,
                "inputs": inputs,
                "head": OmegaConf.to_container(cfg.head, resolve=True),
                "head_lr": cfg.head_lr,
                "optimizer": cfg.optimizer,
                "epochs": cfg.epochs.head,
                "batch_size": cfg.batch_size,
                "seed": cfg.seed,
                "augment": OmegaConf.to_container(cfg.augmentation, resolve=True) if cfg.augment else False,
                "classes": list(job.folder.class_names),
            },
        )
    return CacheKeys(images, features, head, common)


def estimate_seconds(job: Prepared, build_features: set[str], train_head: bool) -> float:
    """A rough compute estimate of one job on this machine, given which feature cuts and head phase it builds."""
    cfg = job.cfg
    per_image = FORWARD_GFLOP_224[cfg.backbone.name] * (cfg.backbone.image_size / 224) ** 2
    boundaries = backbones.get_spec(cfg.backbone.name).boundaries
    n = {s: len(v) for s, v in job.splits.items()}
    n_all, n_train, n_val = sum(n.values()), n["train"], n["validation"]
    lower = boundaries.index(cfg.unfreeze_at) / len(boundaries)  # share of the trunk below the cut
    forward = train = 0.0
    for cut in build_features:
        forward += n_all * per_image * (1.0 if cut in backbones.TOP_CUTS else boundaries.index(cut) / len(boundaries))
    if cfg.augment and train_head:  # augmented pixels: the frozen trunk runs every epoch
        forward += cfg.epochs.head * (n_train + n_val) * per_image
    if "finetune" in cfg.regimes:
        if cfg.augment:
            forward += cfg.epochs.finetune * (n_train + n_val) * per_image * lower
        train += cfg.epochs.finetune * (3 * n_train + n_val) * per_image * (1 - lower)
    if "scratch" in cfg.regimes:
        train += cfg.epochs.scratch * (3 * n_train + n_val) * per_image
    return forward / FORWARD_GFLOPS + train / TRAIN_GFLOPS


def print_plan(jobs: list[tuple[list[str], DictConfig]]) -> None:
    """The dry-run listing: each job, what it would reuse or build (cache entries, head phase), its cost."""
    uri = tracking.connect(jobs[0][1].get("tracking_uri")) if jobs else None
    built: set[str] = set()  # entries an earlier job of this sweep will have written
    total = 0.0
    for i, (overrides, cfg) in enumerate(jobs):
        job = prepare(cfg)
        store = cache.ArrayCache(cfg.cache_dir if cfg.get("cache", True) else None)
        experiment = tracking.find_experiment(str(cfg.study)) if uri else None
        done = experiment is not None and tracking.finished_job(experiment, job.cfg_hash)
        head = f"[{' '.join(overrides)}]"
        if done and not cfg.force:
            print(f"job {i}: {head} config_hash={job.cfg_hash} -> skip (FINISHED as run {done})")
            continue
        keys = cache_keys(job)

        def state(key: str, suffix: str = ".npy", store=store, built=built) -> str:
            return "reuse" if store.has(key, suffix) or key in built else "build"

        lines, to_build = [], set()
        lines.append("images " + " ".join(f"{s}:{state(k)}" for s, k in keys.images.items()))
        head_state = state(keys.head, "") if keys.head else None
        for cut, by_split in keys.features.items():
            if cut in backbones.TOP_CUTS and (cfg.augment or head_state == "reuse"):
                continue  # reused head phase, or augmented head training: the top features are not needed
            states = {s: state(k) for s, k in by_split.items()}
            lines.append(f"features@{cut} " + " ".join(f"{s}:{v}" for s, v in states.items()))
            if "build" in states.values():
                to_build.add(cut)
        if head_state:
            lines.append(f"head phase {head_state}")
        seconds = estimate_seconds(job, to_build, head_state == "build")
        total += seconds
        print(f"job {i}: {head} config_hash={job.cfg_hash} regimes={list(cfg.regimes)}")
        print(f"    {'; '.join(lines)}; est. ~{seconds / 60:.1f} min here")
        built |= set(keys.images.values()) | {k for v in keys.features.values() for k in v.values()}
        if keys.head:
            built.add(keys.head)
    print(f"total: est. ~{total / 60:.1f} min on this machine (rough: +-2x; compute only, no start-up)")


def configure_runtime(cfg: DictConfig) -> int | None:
    """Deterministic ops (same config + seed = same numbers on CPU) and the job's thread budget."""
    import keras
    import tensorflow as tf

    from harness.config import PRECISIONS

    tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(PRECISIONS[cfg.get("precision", "fp32")])
    threads = cfg.get("threads") or default_threads()
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(int(threads))
        except RuntimeError:
            pass  # already initialised by an earlier job in this process: the first setting stands
    return threads


def default_threads() -> int | None:
    """Cores divided among the jobs Hydra's joblib launcher runs at once; None (all) otherwise."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    n_jobs = HydraConfig.get().launcher.get("n_jobs")
    if not n_jobs or n_jobs == 1:
        return None
    parallel = os.cpu_count() if n_jobs < 0 else n_jobs
    return max(1, (os.cpu_count() or 1) // parallel)


def load_arrays(job: Prepared, store: cache.ArrayCache, keys: CacheKeys) -> regimes.Arrays:
    """Every chosen image decoded and resized once, reused from the cache when an earlier job did it."""
    from harness import regimes

    size = job.cfg.backbone.image_size
    splits = job.splits
    t0 = time.perf_counter()
    x = store.arrays(keys.images, lambda missing: {s: data.load_images(splits[s].files, size) for s in missing})
    log.info(
        "data: %s images at %d px ready in %.1fs", {s: len(v) for s, v in x.items()}, size, time.perf_counter() - t0
    )
    return regimes.Arrays({s: x[s] for s in splits}, {s: v.labels for s, v in splits.items()}, job.folder.num_classes)


def cached_features(store: cache.ArrayCache, keys: CacheKeys, cfg: DictConfig, base):
    """The Trainer's features hook: frozen-stage outputs from the cache, built by the cheapest route.

    A missing cut is computed from the deepest cached shallower cut through the segment between them,
    and only from pixels when there is none. The top features of a job that also fine-tunes are built
    through its fine-tuning cut, so one forward pass over the images serves both, and a later job with a
    deeper cut runs only the segment above the cached one.
    """
    import keras

    from harness import regimes

    order = [*backbones.get_spec(cfg.backbone.name).boundaries, *backbones.TOP_CUTS]
    finetune_cut = cfg.unfreeze_at if "finetune" in cfg.regimes else None

    def deepest_cached_below(cut: str, split: str) -> str | None:
        for c in reversed(order[: order.index(cut)]):
            if store.has(keys.feature_key(c, split)):
                return c
        return None

    def from_source(source: str, cut: str, splits: list[str]) -> dict[str, np.ndarray]:
        """Run the segment source -> cut over the cached source features of `splits`, in one predict call."""
        if source == "top":  # pooled from top: the pooling alone
            seg = regimes.pooling(base.output.shape[1:])
        else:
            seg = backbones.segment(base, source, None if cut in backbones.TOP_CUTS else cut)
            if cut == "pooled":
                seg = keras.Model(seg.input, regimes.pooling(seg.output.shape[1:])(seg.output))
        # reading the source is part of building `cut`: not counted as cache hits of this run
        src = {s: np.load(store.path(keys.feature_key(source, s))) for s in splits}
        return regimes.predict_by_split(seg, src)

    def features(stage, arrays: regimes.Arrays, cut: str) -> dict[str, np.ndarray]:
        if cut not in keys.features or not store.enabled:  # scratch's stage is only preprocessing
            return regimes.compute_features(stage, arrays)

        def build(missing: list[str]) -> dict[str, np.ndarray]:
            top = cut in backbones.TOP_CUTS
            if top and finetune_cut and any(deepest_cached_below(cut, s) is None for s in missing):
                lower, _ = backbones.split_at(base, finetune_cut)
                features(regimes.frozen_stage(cfg.backbone.name, cfg.backbone.image_size, lower), arrays, finetune_cut)
            by_source: dict[str | None, list[str]] = {}
            for s in missing:  # each split from its own deepest cached cut: subsamples differ, eval splits don't
                by_source.setdefault(deepest_cached_below(cut, s), []).append(s)
            out = {}
            for source, splits in by_source.items():
                if source is None:
                    out.update(regimes.compute_features(stage, arrays.subset(splits)))
                else:
                    log.info(
                        "features@%s: %s from cached features@%s through the segment between",
                        cut,
                        "/".join(splits),
                        source,
                    )
                    out.update(from_source(source, cut, splits))
            return out

        return store.arrays(keys.features[cut], build)

    return features


@contextmanager
def cache_report(store: cache.ArrayCache) -> Iterator[None]:
    """Tag the active run with its cache use: hit, miss, partial or off, and the build seconds."""
    import mlflow

    hits, misses, build = len(store.stats.hits), len(store.stats.misses), store.stats.build_s
    yield
    h, m = len(store.stats.hits) - hits, len(store.stats.misses) - misses
    if not store.enabled:
        state = "off"
    else:
        state = {(True, False): "hit", (False, True): "miss", (True, True): "partial"}.get((h > 0, m > 0), "none")
    mlflow.set_tag("cache", state)
    mlflow.log_metrics({"cache_hits": h, "cache_misses": m, "cache_build_s": store.stats.build_s - build})


def data_summary(job: Prepared) -> dict[str, object]:
    """What the run must remember about its data: where, which classes, which files (hash), how many."""
    folder = job.folder
    out: dict[str, object] = {
        "data_root": str(folder.root),
        "class_names": list(folder.class_names),
        "train_files_hash": data.files_hash(job.train, folder.root),
        "test_split": "present" if folder.has_test else "absent",
        "bad_files_skipped": len(folder.bad_files),
    }
    out["n_train"] = len(job.train)
    out["n_train_available"] = len(folder.splits["train"])
    out.update({f"n_{s}": len(v) for s, v in folder.splits.items() if s != "train"})
    return out


def log_regime(
    result: regimes.RegimeResult,
    cfg: DictConfig,
    marker_epoch: int | None = None,
    before: dict[str, list[float]] | None = None,
) -> None:
    """Final metrics, curves (raw + EMA) and, if asked, the model, into the active regime run."""
    import mlflow

    final = {"train_time_s": result.train_time_s, **(result.test or {})}
    tracking.log_result_metrics(final)
    if result.test is None:
        mlflow.set_tag("test_split", "absent")
    history, first = result.history, result.first_epoch
    if before is not None:  # fine-tuning: draw the head phase before it, as in the seeds
        history = {k: before[k] + result.history[k] for k in result.history}
        first = 0
    fig = figures.training_curves(
        history, first, f"{cfg.backbone.name} {result.regime} (unfreeze_at={cfg.unfreeze_at})", marker_epoch
    )
    mlflow.log_figure(fig, "curves.png")
    figures.close(fig)
    if result.model is not None:
        mlflow.keras.log_model(result.model, name="model")
    test = f"test_acc {result.test['test_acc']:.4f}" if result.test else "no test split"
    best = max(result.history["val_acc"])
    log.info("%-8s done: %s  best val_acc %.4f  (%.1fs)", result.regime, test, best, result.train_time_s)


@dataclass(frozen=True)
class Skipped:
    """A job not run because the study already has a FINISHED run of its config_hash."""

    run_id: str


def run(cfg: DictConfig, overrides: list[str], name: str) -> dict[str, regimes.RegimeResult] | Skipped:
    """Run one job end to end; returns the results by regime, or Skipped naming the run that has them."""
    import keras

    from harness import regimes

    job = prepare(cfg)
    uri = tracking.connect(cfg.get("tracking_uri"))
    experiment_id = tracking.ensure_experiment(str(cfg.study), uri)
    if tracking.PARENT_RUN_ENV not in os.environ:
        tracking.reap_dead_runs(experiment_id)  # a sweep's callback already did it for the whole sweep
    done = tracking.finished_job(experiment_id, job.cfg_hash)
    if done and not cfg.get("force", False):
        log.info("skip: config_hash %s already FINISHED as run %s (force=true re-runs it)", job.cfg_hash, done)
        return Skipped(done)
    threads = configure_runtime(cfg)
    pretrained = None
    if needs_pretrained(cfg):  # a weights file that does not fit fails here, before any run is opened
        keras.utils.set_random_seed(cfg.seed)  # weights=null: the "pretrained" init follows the seed
        pretrained = backbones.pretrained(cfg.backbone.name, cfg.backbone.weights, cfg.backbone.image_size)
    store = cache.ArrayCache(cfg.cache_dir if cfg.get("cache", True) else None)
    keys = cache_keys(job)
    trainer = regimes.Trainer(
        num_classes=job.folder.num_classes,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        optimizer=cfg.optimizer,
        augment=regimes.augmentation(cfg) if cfg.augment else None,
        callbacks=lambda regime, first: [tracking.epoch_logger()],
        features=cached_features(store, keys, cfg, pretrained),
    )
    results: dict[str, regimes.RegimeResult] = {}
    with tracking.job_run(cfg, job.cfg_hash, overrides, name, experiment_id):
        import mlflow

        mlflow.log_params({f"data.{k}": v for k, v in data_summary(job).items()})
        mlflow.set_tags({"threads": str(threads or "all"), "precision": str(cfg.get("precision", "fp32"))})
        with cache_report(store):
            arrays = load_arrays(job, store, keys)
        if "scratch" in cfg.regimes:
            with tracking.regime_run(cfg, job.cfg_hash, "scratch"):
                results["scratch"] = regimes.train_scratch(cfg, arrays, trainer)
                log_regime(results["scratch"], cfg)
        if "frozen" in cfg.regimes:
            with tracking.regime_run(cfg, job.cfg_hash, "frozen"), cache_report(store):
                bundle = store.load_bundle(keys.head)
                if bundle is not None:
                    results["frozen"], state = regimes.restore_frozen(cfg, arrays, pretrained, bundle)
                    tracking.log_history(results["frozen"].history)
                    log.info("frozen   head phase reused from the cache (%s)", keys.head)
                else:
                    results["frozen"], state = regimes.train_frozen(cfg, arrays, trainer, pretrained)
                    store.store_bundle(keys.head, lambda p: regimes.save_frozen(results["frozen"], state, p))
                mlflow.set_tags({"head_phase": "reused" if bundle else "trained", "head_phase_key": keys.head})
                log_regime(results["frozen"], cfg)
        if "finetune" in cfg.regimes:
            with tracking.regime_run(cfg, job.cfg_hash, "finetune"), cache_report(store):
                results["finetune"] = regimes.train_finetune(cfg, arrays, trainer, state)
                log_regime(results["finetune"], cfg, cfg.epochs.head, results["frozen"].history)
        tracking.log_result_metrics({f"{r}_{k}": v for r, res in results.items() for k, v in (res.test or {}).items()})
        tracking.log_result_metrics(store.stats.as_metrics())
    return results
