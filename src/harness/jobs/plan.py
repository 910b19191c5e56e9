"""The plan of a sweep before it runs: what each job would reuse or build, what it would cost, what fits.

`dry_run=true` prints it and trains nothing. The memory check refuses, before any job trains, a cut
whose features would not fit in `feature_memory_gb` (a shallow cut of a large backbone on many images).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from harness import tracking
from harness.config import Config
from harness.errors import HarnessError
from harness.jobs import cache
from harness.jobs.features import cache_keys
from harness.jobs.inputs import Prepared, prepare
from harness.training import backbones, specs
from harness.training.regime import Recipe, Workload

# What this 2-core machine sustains, GFLOP/s: inference from benchmarks/RESULTS.md (MobileNetV2 at 160 px,
# 48 img/s x 0.306 GFLOP), training from the tf_mobilenetv2 study's scratch epochs (forward + backward,
# counted as 3 x forward, ~4 min for 2,000 train + 1,000 validation images under load).
FORWARD_GFLOPS = 15.0
TRAIN_GFLOPS = 10.0


def estimate_seconds(job: Prepared, build_features: set[str], trains_states: set[str]) -> float:
    """A rough compute estimate of one job on this machine, given which feature cuts it builds and which regimes'
    stored states (the head phase) it trains rather than reuses: the cuts' forward passes, then each regime's own
    cost (its spec's), counting the epochs it may run (with early stopping an upper bound)."""
    cfg = job.cfg
    spec = backbones.get_spec(cfg.backbone.name)
    per_image = spec.gflop_224 * (cfg.backbone.image_size / 224) ** 2
    n = {s: len(v) for s, v in job.splits.items()}
    n_all, n_train = sum(n.values()), n["train"]
    recipe = Recipe.from_cfg(cfg)
    staged = n_all - n_train if cfg.augment else n_all  # augmented: only the held-out splits are staged once
    forward = sum(staged * per_image * depth(spec.boundaries, cut) for cut in build_features)
    seconds = forward / FORWARD_GFLOPS
    for regime in specs.chosen(cfg.regimes):
        work = Workload(
            recipe=recipe,
            per_image_gflop=per_image,
            below_cut=depth(spec.boundaries, cfg.unfreeze_at),
            n_train=n_train,
            n_val=n["validation"],
            epochs=recipe.budget(regime, n_train).epochs,
            trains_state=regime.name in trains_states,
            forward_gflops=FORWARD_GFLOPS,
            train_gflops=TRAIN_GFLOPS,
        )
        seconds += regime.cost(work)
    return seconds


def depth(boundaries: tuple[str, ...], cut: str) -> float:
    """The share of the backbone's forward pass below a cut (the top cuts: all of it)."""
    return 1.0 if cut in backbones.TOP_CUTS else boundaries.index(cut) / len(boundaries)


def feature_cuts(cfg: Config) -> list[str]:
    """The cuts whose features a job holds in memory (with augmentation, of the held-out splits only)."""
    return specs.cuts(cfg.regimes, Recipe.from_cfg(cfg))


def staged_splits(job: Prepared) -> list[str]:
    """The splits that go through the frozen stage once: all, or with augmentation all but train."""
    return [s for s in job.splits if not (job.cfg.augment and s == "train")]


def feature_bytes(job: Prepared) -> dict[str, int]:
    """Bytes of float32 features per cut of this job, over the splits it stages."""
    cfg = job.cfg
    n = sum(len(job.splits[s]) for s in staged_splits(job))
    out = {}
    for cut in feature_cuts(cfg):
        size = 4 * n
        for dim in backbones.cut_shape(cfg.backbone.name, cfg.backbone.image_size, cut):
            size *= dim
        out[cut] = size
    return out


def bytes_to_write(job: Prepared) -> dict[str, int]:
    """What this job would add to its cache, by entry: decoded images and feature cuts not already there (a stored
    head phase is a few MB and not counted)."""
    cfg = job.cfg
    store = cache.ArrayCache(cfg.cache_dir)
    keys = cache_keys(job)
    size = cfg.backbone.image_size
    out = {}
    images = sum(len(job.splits[s]) * size * size * 3 for s, key in keys.images.items() if not store.has(key))
    if images:
        out["images"] = images
    staged = staged_splits(job)
    for cut, by_split in keys.features.items():
        per_image = 4
        for dim in backbones.cut_shape(cfg.backbone.name, size, cut):
            per_image *= dim
        missing = sum(
            len(job.splits[s]) * per_image for s, key in by_split.items() if s in staged and not store.has(key)
        )
        if missing:
            out[f"features@{cut}"] = missing
    return out


def check_disk(job: Prepared) -> None:
    """Refuse, before any job trains, a job whose new cache entries would not fit on the cache folder's filesystem,
    with what it needs and what is free."""
    if not job.cfg.cache:
        return
    need = bytes_to_write(job)
    folder = Path(job.cfg.cache_dir).expanduser()
    existing = next((p for p in (folder, *folder.parents) if p.exists()), folder)
    free = shutil.disk_usage(existing).free
    if sum(need.values()) > free:
        parts = ", ".join(f"{name} {gb(n)}" for name, n in need.items())
        raise HarnessError(
            f"cache_dir={str(folder)!r} has {gb(free)} free on its filesystem, and this job would write "
            f"{gb(sum(need.values()))} ({parts}). Free some space, give a cache_dir=... on a larger disk, or a "
            "deeper unfreeze_at or smaller backbone.image_size"
        )


def gb(n_bytes: float) -> str:
    """Bytes for a person: GB from 1 GB up, MB below."""
    return f"{n_bytes / 1e9:.2f} GB" if n_bytes >= 1e9 else f"{n_bytes / 1e6:.1f} MB"


def check_feature_memory(job: Prepared) -> None:
    """Refuse a cut whose features would not fit in `feature_memory_gb`, naming it and what to change."""
    budget = float(job.cfg.feature_memory_gb) * 1e9
    n = sum(len(job.splits[s]) for s in staged_splits(job))
    for cut, size in feature_bytes(job).items():
        if size > budget:
            raise HarnessError(
                f"features at cut {cut!r} of {job.cfg.backbone.name} at {job.cfg.backbone.image_size} px would take "
                f"{gb(size)} for {n} images, over feature_memory_gb={job.cfg.feature_memory_gb}. Choose a deeper "
                "unfreeze_at, a smaller backbone.image_size or data_fraction, augment=true (features of the held-out "
                "splits only), "
                "or raise feature_memory_gb."
            )


def print_plan(jobs: list[tuple[list[str], Config]]) -> None:
    """The dry-run listing: each job, what it would reuse or build (cache entries, head phase), its cost."""
    uri = tracking.connect(jobs[0][1].tracking_uri) if jobs else None
    built: set[str] = set()  # entries an earlier job of this sweep will have written
    total = 0.0
    for i, (overrides, cfg) in enumerate(jobs):
        job = prepare(cfg)
        sizes = feature_bytes(job)
        store = cache.ArrayCache(cfg.cache_dir if cfg.cache else None)
        experiment = tracking.find_experiment(str(cfg.study)) if uri else None
        done = experiment and tracking.finished_job(experiment, job.identity)
        head = f"[{' '.join(overrides)}]"
        if done and not cfg.force:
            print(f"job {i}: {head} identity={job.identity} -> skip (FINISHED as run {done.run_id})")
            continue
        keys = cache_keys(job)

        def state(key: str, suffix: str = ".npy", store=store, built=built) -> str:
            return "reuse" if store.has(key, suffix) or key in built else "build"

        lines, to_build = [], set()
        lines.append("images " + " ".join(f"{s}:{state(k)}" for s, k in keys.images.items()))
        states = {regime: state(key, "") for regime, key in keys.states.items()}
        reused_cuts = {c for r, v in states.items() if v == "reuse" for c in specs.spec(r).cuts(Recipe.from_cfg(cfg))}
        for cut, by_split in keys.features.items():
            if cut in reused_cuts and cut in backbones.TOP_CUTS:
                continue  # a reused head phase needs no top features
            cut_states = {s: state(k) for s, k in by_split.items() if s in staged_splits(job)}
            size = f" ({gb(sizes[cut])})" if cut in sizes else ""
            lines.append(f"features@{cut}{size} " + " ".join(f"{s}:{v}" for s, v in cut_states.items()))
            if "build" in cut_states.values():
                to_build.add(cut)
        for regime, value in states.items():
            lines.append(f"{specs.spec(regime).reuse.kind} phase {value}")  # type: ignore[union-attr]
        seconds = estimate_seconds(job, to_build, {r for r, v in states.items() if v == "build"})
        total += seconds
        print(f"job {i}: {head} identity={job.identity} regimes={[str(r) for r in cfg.regimes]}")
        bound = "at most " if cfg.early_stopping.enabled else ""  # the rule may end phases sooner
        if cfg.cache:  # an earlier job of the sweep may write some of these entries first: at most
            lines.append(f"cache writes at most {gb(sum(bytes_to_write(job).values()))}")
        print(f"    {'; '.join(lines)}; est. {bound}~{seconds / 60:.1f} min here")
        built |= set(keys.images.values()) | {k for v in keys.features.values() for k in v.values()}
        built |= set(keys.states.values())
    stops = any(cfg.early_stopping.enabled for _, cfg in jobs)
    bound = "at most " if stops else ""
    print(f"total: est. {bound}~{total / 60:.1f} min on this machine (rough: +-2x; compute only, no start-up)")
    caches = {str(cfg.cache_dir) for _, cfg in jobs if cfg.cache}
    for folder in sorted(caches):
        existing = next(p for p in (Path(folder).expanduser(), *Path(folder).expanduser().parents) if p.exists())
        print(f"cache_dir={folder}: {gb(shutil.disk_usage(existing).free)} free")
