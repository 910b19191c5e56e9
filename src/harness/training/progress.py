"""The console's line per epoch while a phase trains: what a researcher watches between the job's start and its
results row (metrics, seconds per epoch, and how long the phase has left)."""

from __future__ import annotations

import logging
import time

import keras

log = logging.getLogger("harness.training.regimes")  # the training lines keep the logger name people filter on

METRICS = ("loss", "acc", "val_loss", "val_acc")


class ProgressLine(keras.callbacks.Callback):
    """One console line per epoch: regime, epoch k/n, the four metrics, seconds, and the time left."""

    def __init__(self, regime: str, last_epoch: int):
        super().__init__()
        self.regime, self.last_epoch = regime, last_epoch
        self._seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        seconds = time.perf_counter() - self._t0
        self._seconds.append(seconds)
        values = "  ".join(f"{k} {logs[k]:.4f}" for k in METRICS if k in logs)
        log.info(
            "%-8s epoch %3d/%d  %s  (%.1fs%s)", self.regime, epoch + 1, self.last_epoch, values, seconds,
            eta(self._seconds, self.last_epoch - (epoch + 1)),
        )  # fmt: skip


def eta(epoch_seconds: list[float], left: int) -> str:
    """', about 1m05s left' from the epochs so far (the first, which traces the graph, only when alone)."""
    if left <= 0 or not epoch_seconds:
        return ""
    typical = epoch_seconds[1:] or epoch_seconds
    remaining = round(sum(typical) / len(typical) * left)
    return f", about {remaining // 60}m{remaining % 60:02d}s left" if remaining >= 60 else f", about {remaining}s left"
