"""Matplotlib figures of training curves, raw and EMA-smoothed as in Chollet 5.3."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: runs on headless machines and inside Hydra jobs
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

EMA_FACTOR = 0.8


def ema(points: Sequence[float], factor: float = EMA_FACTOR) -> list[float]:
    """Exponential moving average (Chollet's `smooth_curve`): s_t = f * s_{t-1} + (1 - f) * x_t, s_0 = x_0."""
    import pandas as pd

    return pd.Series(points, dtype=float).ewm(alpha=1 - factor, adjust=False).mean().tolist()


def training_curves(
    history: Mapping[str, Sequence[float]],
    first_epoch: int = 0,
    title: str = "",
    marker_epoch: int | None = None,
) -> Figure:
    """Accuracy and loss (rows), raw and EMA-smoothed (columns), train vs validation.

    `marker_epoch` draws the TensorFlow tutorial's "Start Fine Tuning" line where the head phase ends.
    """
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    epochs = [first_epoch + i + 1 for i in range(len(history["loss"]))]
    for row, metric in enumerate(("acc", "loss")):
        for col, smooth in enumerate((False, True)):
            ax = axes[row][col]
            for key, style in ((metric, "o-"), (f"val_{metric}", "s-")):
                values = ema(history[key]) if smooth else list(history[key])
                ax.plot(epochs, values, style, markersize=3, label="train" if key == metric else "validation")
            if marker_epoch is not None:
                ax.axvline(marker_epoch + 0.5, color="grey", linestyle="--", linewidth=1, label="start fine-tuning")
            ax.set_title(f"{metric} ({f'EMA {EMA_FACTOR:.1f}' if smooth else 'raw'})")
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def close(fig: Figure) -> None:
    """Free a figure's memory (sweeps draw hundreds)."""
    plt.close(fig)
