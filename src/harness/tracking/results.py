"""What a job leaves in its runs once it has trained: cache use, and each regime's metrics, test predictions,
curves and how its phase stopped. `jobs.job` only orchestrates; what a run records lives here."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.tracking.records import (
    log_figure,
    log_keras_model,
    log_params,
    log_predictions,
    log_result_metrics,
    set_tags,
)

if TYPE_CHECKING:
    from harness.training.trainer import RegimeResult

log = logging.getLogger("harness.jobs.job")  # the line researchers read as each regime ends, under the job's name


@contextmanager
def cache_use(stats: Any, enabled: bool) -> Iterator[None]:
    """Tag the active run with its cache use (hit, miss, partial, none or off) and the build seconds, counted from
    `stats` (a cache's running hits, misses and build_s) while the block runs."""
    hits, misses, build = len(stats.hits), len(stats.misses), stats.build_s
    yield
    h, m = len(stats.hits) - hits, len(stats.misses) - misses
    if not enabled:
        state = "off"
    else:
        state = {(True, False): "hit", (False, True): "miss", (True, True): "partial"}.get((h > 0, m > 0), "none")
    set_tags({"cache": state})
    log_result_metrics({"cache_hits": h, "cache_misses": m, "cache_build_s": stats.build_s - build})


def log_regime(
    result: RegimeResult,
    title: str,
    test_images: tuple[Path, Sequence[Path], Any, Sequence[str]] | None,
    marker_epoch: int | None = None,
    before: dict[str, list[float]] | None = None,
) -> None:
    """Final metrics, per-image test predictions (`test_images`: the data root, the test files, their labels and
    the class names), curves (raw + EMA) titled `title` and, if asked, the model, into the active regime run."""
    from harness.training import figures

    log_result_metrics({"train_time_s": result.train_time_s, **(result.test or {}), **(result.estimates or {})})
    if result.test_scores is not None and test_images is not None:
        log_predictions(*test_images, result.test_scores)
    log_stopping(result)
    if result.test is None:
        set_tags({"test_split": "absent"})
    history, first = result.history, result.first_epoch
    if before is not None:  # fine-tuning: draw the head phase before it, as in the TensorFlow tutorial's plots
        history = {k: before[k] + result.history[k] for k in result.history}
        first = 0
    fig = figures.training_curves(history, first, title, marker_epoch)
    log_figure(fig, "curves.png")
    figures.close(fig)
    if result.model is not None:
        log_keras_model(result.model)
    test = f"test_acc {result.test['test_acc']:.4f}" if result.test else "no test split"
    best = max(result.history["val_acc"])
    log.info("%-8s done: %s  best val_acc %.4f  (%.1fs)", result.regime, test, best, result.train_time_s)


def log_stopping(result: RegimeResult) -> None:
    """How long the phase could run and how it ended, so regimes are compared knowing both: param epochs_max
    and steps_per_epoch, tag epochs_from (epochs | steps_budget), metrics best_epoch (curve step) and
    epochs_run, tag stopped (early | max_epochs)."""
    if result.budget is not None:
        log_params({"epochs_max": result.budget.epochs, "steps_per_epoch": result.budget.steps_per_epoch})
        set_tags({"epochs_from": result.budget.source})
    if result.outcome is not None:
        log_result_metrics({"best_epoch": result.outcome.best_epoch, "epochs_run": result.outcome.epochs_run})
        set_tags({"stopped": result.outcome.stopped})
