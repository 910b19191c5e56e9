"""One job of a study: check everything, then train the requested regimes inside MLflow runs.

Order matters: every check that can fail on user input (config, data folder, weights file, store)
runs before the first MLflow run is opened or any image is decoded, so bad input leaves nothing behind.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from harness import backbones, data, figures, tracking
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


@functools.lru_cache(maxsize=8)
def _check_weights_fit(name: str, weights: str, image_size: int) -> None:
    backbones.build(name, weights, image_size)


def check(cfg: DictConfig) -> None:
    """Every check a job makes before training, keeping nothing: what a sweep runs on each job first."""
    prepare(cfg)
    weights = cfg.backbone.weights
    if needs_pretrained(cfg) and weights not in (None, "imagenet"):  # imagenet: checked by Keras on download
        _check_weights_fit(cfg.backbone.name, str(weights), cfg.backbone.image_size)


def print_plan(jobs: list[tuple[list[str], DictConfig]]) -> None:
    """The dry-run listing: each job, its config hash, and whether the study already has it."""
    uri = tracking.connect(jobs[0][1].get("tracking_uri")) if jobs else None
    for i, (overrides, cfg) in enumerate(jobs):
        cfg_hash = config_hash(cfg)
        experiment = tracking.find_experiment(str(cfg.study)) if uri else None
        done = experiment is not None and tracking.finished_job(experiment, cfg_hash)
        action = f"skip (FINISHED as run {done})" if done and not cfg.force else "run"
        print(f"job {i}: [{' '.join(overrides)}] config_hash={cfg_hash} regimes={list(cfg.regimes)} -> {action}")


def configure_runtime(cfg: DictConfig) -> int | None:
    """Deterministic ops (same config + seed = same numbers on CPU) and the job's thread budget."""
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
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


def load_arrays(job: Prepared) -> regimes.Arrays:
    """Decode and resize every image of the chosen files once."""
    from harness import regimes

    size = job.cfg.backbone.image_size
    splits = {"train": job.train, **{s: v for s, v in job.folder.splits.items() if s != "train"}}
    t0 = time.perf_counter()
    x = {s: data.load_images(split.files, size) for s, split in splits.items()}
    y = {s: split.labels for s, split in splits.items()}
    log.info(
        "data: decoded %s images at %d px in %.1fs", {s: len(v) for s, v in x.items()}, size, time.perf_counter() - t0
    )
    return regimes.Arrays(x, y, job.folder.num_classes)


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


def run(cfg: DictConfig, overrides: list[str], name: str) -> dict[str, regimes.RegimeResult] | None:
    """Run one job end to end; returns the results by regime, or None when skipped as already done."""
    from harness import regimes

    job = prepare(cfg)
    uri = tracking.connect(cfg.get("tracking_uri"))
    experiment_id = tracking.ensure_experiment(str(cfg.study), uri)
    if tracking.PARENT_RUN_ENV not in os.environ:
        tracking.reap_dead_runs(experiment_id)  # a sweep's callback already did it for the whole sweep
    done = tracking.finished_job(experiment_id, job.cfg_hash)
    if done and not cfg.get("force", False):
        log.info("skip: config_hash %s already FINISHED as run %s (force=true re-runs it)", job.cfg_hash, done)
        return None
    pretrained = None
    if needs_pretrained(cfg):  # a weights file that does not fit fails here, before any run is opened
        pretrained = backbones.build(cfg.backbone.name, cfg.backbone.weights, cfg.backbone.image_size)
    threads = configure_runtime(cfg)
    trainer = regimes.Trainer(
        num_classes=job.folder.num_classes,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        optimizer=cfg.optimizer,
        augment=regimes.augmentation(cfg) if cfg.augment else None,
        callbacks=lambda regime, first: [tracking.epoch_logger()],
    )
    results: dict[str, regimes.RegimeResult] = {}
    with tracking.job_run(cfg, job.cfg_hash, overrides, name):
        import mlflow

        mlflow.log_params({f"data.{k}": v for k, v in data_summary(job).items()})
        mlflow.set_tag("threads", str(threads or "all"))
        arrays = load_arrays(job)
        if "scratch" in cfg.regimes:
            with tracking.regime_run(cfg, job.cfg_hash, "scratch"):
                results["scratch"] = regimes.train_scratch(cfg, arrays, trainer)
                log_regime(results["scratch"], cfg)
        if "frozen" in cfg.regimes:
            with tracking.regime_run(cfg, job.cfg_hash, "frozen"):
                results["frozen"], state = regimes.train_frozen(cfg, arrays, trainer, pretrained)
                log_regime(results["frozen"], cfg)
        if "finetune" in cfg.regimes:
            with tracking.regime_run(cfg, job.cfg_hash, "finetune"):
                results["finetune"] = regimes.train_finetune(cfg, arrays, trainer, state)
                log_regime(results["finetune"], cfg, cfg.epochs.head, results["frozen"].history)
        tracking.log_result_metrics({f"{r}_{k}": v for r, res in results.items() for k, v in (res.test or {}).items()})
    return results
