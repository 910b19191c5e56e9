"""The plan of a sweep before it runs: what each job would reuse or build, what it would cost, what fits.

`dry_run=true` prints it and trains nothing. Images and features live on disk, memory-mapped (`jobs.cache`), so
disk is the budget: the disk check refuses, before any job trains, a job whose new cache entries would not fit
on the cache folder's filesystem, or whose temporary arrays would not fit in the temporary folder (`$TMPDIR`).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from harness import tracking
from harness.config import Config
from harness.errors import HarnessError
from harness.jobs import cache
from harness.jobs.features import cache_keys
from harness.jobs.inputs import Prepared, prepare
from harness.training import backbones, specs
from harness.training.regime import Recipe, Workload
from harness.training.runtime import quiet_tensorflow

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
    forward = sum(staged * per_image * depth(spec, cut) for cut in build_features)
    seconds = forward / FORWARD_GFLOPS
    for regime in specs.chosen(cfg.regimes):
        work = Workload(
            recipe=recipe,
            per_image_gflop=per_image,
            below_cut=depth(spec, cfg.unfreeze_at),
            n_train=n_train,
            n_val=n["validation"],
            epochs=recipe.budget(regime, n_train).epochs,
            trains_state=regime.name in trains_states,
            forward_gflops=FORWARD_GFLOPS,
            train_gflops=TRAIN_GFLOPS,
        )
        seconds += regime.cost(work)
    return seconds


def depth(spec: backbones.BackboneSpec, cut: str) -> float:
    """The share of the backbone's forward pass below a cut (the top cuts: all of it), counted from its graph."""
    return 1.0 if cut in backbones.TOP_CUTS else spec.cost_below[cut]


def feature_cuts(cfg: Config) -> list[str]:
    """The cuts whose features a job computes (with augmentation, of the held-out splits only)."""
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
    store = cache.ArrayCache(cfg.cache_dir if cfg.cache else None)  # no cache: every array is written anew
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


def temporary_bytes(job: Prepared) -> dict[str, int]:
    """What this job would write to temporary files (`$TMPDIR`, freed when it ends): with cache=false every array
    it builds; always the preprocessed pixels a regime trains on (float32, never cached)."""
    cfg = job.cfg
    out = {} if cfg.cache else bytes_to_write(job)
    recipe = Recipe.from_cfg(cfg)
    per_image = sum(s.temporary_values(recipe) for s in specs.chosen(cfg.regimes) if s.temporary_values)
    if per_image:
        out["pixels"] = sum(len(job.splits[s]) for s in staged_splits(job)) * 4 * per_image
    return out


def check_disk(job: Prepared) -> None:
    """Refuse, before any job trains, a job whose new cache entries would not fit on the cache folder's filesystem,
    or whose temporary arrays would not fit in the temporary folder's, with what it needs and what is free."""
    quiet_tensorflow()  # the cuts' shapes come from a Keras build (the job's own, else an unweighted one)
    places = [(f"cache_dir={job.cfg.cache_dir!r}", job.cfg.cache_dir, bytes_to_write(job) if job.cfg.cache else {})]
    temporary = tempfile.gettempdir()
    places.append((f"the temporary folder {temporary!r} ($TMPDIR)", temporary, temporary_bytes(job)))
    for name, where, need in places:
        free = free_bytes(where)
        if sum(need.values()) > free:
            parts = ", ".join(f"{entry} {gb(n)}" for entry, n in need.items())
            raise HarnessError(
                f"{name} has {gb(free)} free on its filesystem, and this job would write {gb(sum(need.values()))} "
                f"({parts}). Free some space, give a cache_dir=... (or TMPDIR=...) on a larger disk, or a deeper "
                "unfreeze_at or smaller backbone.image_size"
            )


def free_bytes(folder: str | Path) -> int:
    """Free bytes on the filesystem of `folder`, or of its nearest existing parent."""
    path = Path(folder).expanduser()
    existing = next((p for p in (path, *path.parents) if p.exists()), path)
    return shutil.disk_usage(existing).free


def gb(n_bytes: float) -> str:
    """Bytes for a person: GB from 1 GB up, MB below."""
    return f"{n_bytes / 1e9:.2f} GB" if n_bytes >= 1e9 else f"{n_bytes / 1e6:.1f} MB"


def cached_estimates(store: cache.ArrayCache, key: str, job: Prepared, seen: dict[str, str | None]) -> str | None:
    """The transferability estimates of training features already in the cache (what the run would log before
    it trains, on the same pooled features), or None when they are not there yet; computed once per entry in
    `seen` (the seeds of a sweep share their pretrained features)."""
    from harness.training import transferability

    if key not in seen:
        features = store.load(key)
        if features is None:
            seen[key] = None
        else:
            found = transferability.estimates(features, job.train.labels)
            seen[key] = f"LogME {found['logme']:.3f}, k-NN LOO acc {100 * found['knn_loo_acc']:.1f}%"
    return seen[key]


def print_plan(jobs: list[tuple[list[str], Config]]) -> None:
    """The dry-run listing: each job, what it would reuse or build (cache entries, head phase), its cost."""
    uri = tracking.connect(jobs[0][1].tracking_uri) if jobs else None
    built: set[str] = set()  # entries an earlier job of this sweep will have written
    estimated: dict[str, str | None] = {}  # cached training features -> their estimates
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
            if estimates := cached_estimates(store, by_split["train"], job, estimated):
                lines.append(f"estimates@{cut} {estimates}")
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
        if temporary := sum(temporary_bytes(job).values()):
            lines.append(f"temporary files {gb(temporary)}")
        print(f"    {'; '.join(lines)}; est. {bound}~{seconds / 60:.1f} min here")
        built |= set(keys.images.values()) | {k for v in keys.features.values() for k in v.values()}
        built |= set(keys.states.values())
    stops = any(cfg.early_stopping.enabled for _, cfg in jobs)
    bound = "at most " if stops else ""
    print(f"total: est. {bound}~{total / 60:.1f} min on this machine (rough: +-2x; compute only, no start-up)")
    caches = {str(cfg.cache_dir) for _, cfg in jobs if cfg.cache}
    for folder in sorted(caches):
        print(f"cache_dir={folder}: {gb(free_bytes(folder))} free")
