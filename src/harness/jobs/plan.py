"""The plan of a sweep before it runs: what each job would reuse or build, what it would cost, what fits.

`dry_run=true` prints it and trains nothing. The memory check refuses, before any job trains, a cut
whose features would not fit in `feature_memory_gb` (a shallow cut of a large backbone on many images).
"""

from __future__ import annotations

from harness import tracking
from harness.config import Config
from harness.errors import HarnessError
from harness.jobs import cache
from harness.jobs.features import cache_keys
from harness.jobs.inputs import Prepared, prepare
from harness.training import backbones, stopping

# Rough forward cost per image at 224 px in GFLOP (2 x multiply-adds), for the dry run's estimate: each backbone's
# from its spec; Chollet's small convnet (scratch.model=small_convnet) 0.46 GFLOP at 150 px (its convolutions).
SMALL_CONVNET_GFLOP_224 = 1.03


def gflop_224(model: str) -> float:
    return SMALL_CONVNET_GFLOP_224 if model == "small_convnet" else backbones.get_spec(model).gflop_224


# What this 2-core machine sustains, GFLOP/s: inference from benchmarks/RESULTS.md (MobileNetV2 at 160 px,
# 48 img/s x 0.306 GFLOP), training from the tf_mobilenetv2 study's scratch epochs (forward + backward,
# counted as 3 x forward, ~4 min for 2,000 train + 1,000 validation images under load).
FORWARD_GFLOPS = 15.0
TRAIN_GFLOPS = 10.0
# Chollet's small convnet runs its plain 3x3 convolutions far closer to the machine's peak: ~30 s per epoch of
# 2,000 training and 1,000 validation images at 150 px, measured here (3,220 GFLOP counted as below)
TRAIN_GFLOPS_BY_MODEL = {"small_convnet": 100.0}


def estimate_seconds(job: Prepared, build_features: set[str], train_head: bool) -> float:
    """A rough compute estimate of one job on this machine, given which feature cuts and head phase it builds.

    Each phase counts the epochs it may run (its epochs key, or its step budget on this job's training
    split); with early stopping that is an upper bound. Scratch counts at its own image size.
    """
    cfg = job.cfg
    per_image = gflop_224(cfg.backbone.name) * (cfg.backbone.image_size / 224) ** 2
    boundaries = backbones.get_spec(cfg.backbone.name).boundaries
    n = {s: len(v) for s, v in job.splits.items()}
    n_all, n_train, n_val = sum(n.values()), n["train"], n["validation"]
    epochs = {str(r): stopping.phase_budget(cfg, str(r), n_train).epochs for r in cfg.regimes}
    lower = boundaries.index(cfg.unfreeze_at) / len(boundaries)  # share of the trunk below the cut
    forward = train = scratch_s = 0.0
    staged = n_all - n_train if cfg.augment else n_all  # augmented: only the held-out splits are staged once
    for cut in build_features:
        forward += staged * per_image * (1.0 if cut in backbones.TOP_CUTS else boundaries.index(cut) / len(boundaries))
    if cfg.augment and train_head:  # augmented pixels: the frozen trunk runs over the training split every epoch
        forward += epochs["frozen"] * n_train * per_image
    if "finetune" in epochs:
        if cfg.augment:
            forward += epochs["finetune"] * n_train * per_image * lower
        train += epochs["finetune"] * (3 * n_train + n_val) * per_image * (1 - lower)
    if "scratch" in epochs:
        scratch_size = cfg.scratch.image_size or cfg.backbone.image_size
        model = cfg.backbone.name if cfg.scratch.model == "backbone" else str(cfg.scratch.model)
        per_scratch = gflop_224(model) * (scratch_size / 224) ** 2
        rate = TRAIN_GFLOPS_BY_MODEL.get(model, TRAIN_GFLOPS)
        scratch_s = epochs["scratch"] * (3 * n_train + n_val) * per_scratch / rate
    return forward / FORWARD_GFLOPS + train / TRAIN_GFLOPS + scratch_s


def feature_cuts(cfg: Config) -> list[str]:
    """The cuts whose features a job holds in memory (with augmentation, of the held-out splits only)."""
    cuts = [backbones.frozen_cut(cfg.head.pooling, cfg.augment)] if "frozen" in cfg.regimes else []
    return cuts + ([cfg.unfreeze_at] if "finetune" in cfg.regimes else [])


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
        head_state = state(keys.head, "") if keys.head else None
        for cut, by_split in keys.features.items():
            if cut in backbones.TOP_CUTS and head_state == "reuse":
                continue  # a reused head phase needs no top features
            states = {s: state(k) for s, k in by_split.items() if s in staged_splits(job)}
            size = f" ({gb(sizes[cut])})" if cut in sizes else ""
            lines.append(f"features@{cut}{size} " + " ".join(f"{s}:{v}" for s, v in states.items()))
            if "build" in states.values():
                to_build.add(cut)
        if head_state:
            lines.append(f"head phase {head_state}")
        seconds = estimate_seconds(job, to_build, head_state == "build")
        total += seconds
        print(f"job {i}: {head} identity={job.identity} regimes={[str(r) for r in cfg.regimes]}")
        bound = "at most " if cfg.early_stopping.enabled else ""  # the rule may end phases sooner
        print(f"    {'; '.join(lines)}; est. {bound}~{seconds / 60:.1f} min here")
        built |= set(keys.images.values()) | {k for v in keys.features.values() for k in v.values()}
        if keys.head:
            built.add(keys.head)
    stops = any(cfg.early_stopping.enabled for _, cfg in jobs)
    bound = "at most " if stops else ""
    print(f"total: est. {bound}~{total / 60:.1f} min on this machine (rough: +-2x; compute only, no start-up)")
