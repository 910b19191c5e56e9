"""One job of a study: check everything, then train the requested regimes inside MLflow runs.

Order matters: every check that can fail on user input (config, data folder, weights file, store)
runs before the first MLflow run is opened or any image is decoded, so bad input leaves nothing behind.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from omegaconf import DictConfig

from harness import backbones, data, figures, regimes, tracking
from harness.config import config_hash, validate

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """A job whose inputs all passed their checks."""

    cfg: DictConfig
    cfg_hash: str
    folder: data.ImageFolder
    train: data.Split
    pretrained: object | None  # the built pretrained backbone (frozen/finetune), None for scratch only


def prepare(cfg: DictConfig) -> Prepared:
    """Validate config, data and weights; raises HarnessError before any expensive work."""
    validate(cfg)
    folder = data.scan_folder(data.resolve_data_path(cfg.data), cfg.data.get("on_bad_file", "skip"))
    train = data.subsample(folder.splits["train"], cfg.data_fraction, cfg.seed, folder.class_names)
    pretrained = None
    if {"frozen", "finetune"} & set(cfg.regimes):
        pretrained = backbones.build(cfg.backbone.name, cfg.backbone.weights, cfg.backbone.image_size)
    return Prepared(cfg, config_hash(cfg), folder, train, pretrained)


def configure_runtime(cfg: DictConfig) -> None:
    """Deterministic ops (same config + seed = same numbers on CPU) and the job's thread budget."""
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    threads = cfg.get("threads")
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(int(threads))
        except RuntimeError:
            pass  # already initialised by an earlier job in this process: the first setting stands


def load_arrays(job: Prepared) -> regimes.Arrays:
    """Decode and resize every image of the chosen files once."""
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


def run(cfg: DictConfig, overrides: list[str], name: str) -> dict[str, regimes.RegimeResult]:
    """Run one job end to end; returns the results by regime."""
    job = prepare(cfg)
    uri = tracking.connect(cfg.get("tracking_uri"))
    tracking.ensure_experiment(str(cfg.study), uri)
    configure_runtime(cfg)
    arrays = load_arrays(job)
    trainer = regimes.Trainer(
        num_classes=arrays.num_classes,
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
        if "scratch" in cfg.regimes:
            with tracking.regime_run(cfg, job.cfg_hash, "scratch"):
                results["scratch"] = regimes.train_scratch(cfg, arrays, trainer)
                log_regime(results["scratch"], cfg)
        if "frozen" in cfg.regimes:
            with tracking.regime_run(cfg, job.cfg_hash, "frozen"):
                results["frozen"], state = regimes.train_frozen(cfg, arrays, trainer, job.pretrained)
                log_regime(results["frozen"], cfg)
        if "finetune" in cfg.regimes:
            with tracking.regime_run(cfg, job.cfg_hash, "finetune"):
                results["finetune"] = regimes.train_finetune(cfg, arrays, trainer, state)
                log_regime(results["finetune"], cfg, cfg.epochs.head, results["frozen"].history)
        tracking.log_result_metrics({f"{r}_{k}": v for r, res in results.items() for k, v in (res.test or {}).items()})
    return results
