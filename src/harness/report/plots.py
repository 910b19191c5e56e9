"""The report's figures: validation curves, test accuracy against boundary and data fraction."""

from __future__ import annotations

import logging
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from harness.report.runs import REGIME_COLORS, REGIME_LABELS, REGIMES, seed_mean_curve
from harness.report.tables import boundary_order, decided_by_budget, regimes_run, row_keys_of, shown, used_key
from harness.training.figures import EMA_FACTOR, close, plt  # pyplot with the Agg backend figures.py chose

log = logging.getLogger("harness.report")

FIGURE_CURVES = "val_acc_curves_{:02d}.png"
FIGURE_UNFREEZE = "test_acc_vs_unfreeze_at.png"
FIGURE_FRACTION = "test_acc_vs_data_fraction.png"


# ----------------------------------------------------------------------------------------------- figures


def _varying(table: pd.DataFrame, keys: Iterable[str], exclude: Iterable[str]) -> list[str]:
    return [k for k in keys if k not in set(exclude) and table[k].nunique() > 1]


def _title(values: dict[str, Any], width: int = 90) -> str:
    """key=value pairs wrapped at `width` characters, never inside a pair."""
    return textwrap.fill(", ".join(f"{k}={v}" for k, v in values.items()), width, break_long_words=False)


def smooth(values: pd.Series, factor: float = EMA_FACTOR) -> pd.Series:
    """Chollet's EMA s_t = f * s_(t-1) + (1 - f) * x_t, as pandas' ewm (adjust=False is exactly that recursion)."""
    return values.ewm(alpha=1 - factor, adjust=False).mean()


def _legend(ax, below: bool = False) -> None:
    """A legend that shows the line styles (long handles) and stays off the lines (beside or below the axes)."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    labels = [textwrap.fill(label, 40, break_long_words=False) for label in labels]
    # an errorbar's legend handle draws its error bar across the line; its data line alone shows the style
    handles = [h.lines[0] if isinstance(h, ErrorbarContainer) else h for h in handles]
    where = {"loc": "upper center", "bbox_to_anchor": (0.5, -0.28)} if below else {"loc": "best"}
    ax.legend(handles, labels, fontsize=8, handlelength=4, **where)


def curves_figure(finished: pd.DataFrame, curves: pd.DataFrame, title: str = "") -> Figure:
    """Validation accuracy of the regimes of one configuration overlaid, raw and EMA-smoothed.

    Thin lines: seeds; thick: their mean over the epochs every seed ran (`seed_mean_curve`). Fine-tuning's
    epochs continue after the head phase, so the fine-tuned curve starts where the frozen one ends, as in
    Chollet's plots; where a stopping rule ended the seeds' head phases at different epochs, the fine-tuned
    mean is aligned on the start of fine-tuning and drawn from the earliest seed's.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    merged = curves.merge(finished[["run_id", "regime", "seed"]], on="run_id").sort_values("step")
    means = seed_mean_curve(merged, ["regime"])
    for regime in REGIMES:
        part = merged[merged["regime"] == regime]
        if part.empty:
            continue
        color, label = REGIME_COLORS[regime], REGIME_LABELS[regime]
        mean = means[means["regime"] == regime]
        epochs = (mean["first_step"] + mean["phase_step"] + 1).to_numpy()
        for _, seed_curve in part.groupby("seed"):
            axes[0].plot(seed_curve["step"] + 1, seed_curve["val_acc"], color=color, alpha=0.3, linewidth=1)
        ragged = part.groupby("run_id")["step"].agg(["min", "max"]).nunique().max() > 1
        mean_label = f"{label} (mean of seeds{', epochs all ran' if ragged else ''})"
        axes[0].plot(epochs, mean["val_acc"].to_numpy(), "o-", color=color, markersize=4, label=mean_label)
        axes[1].plot(epochs, smooth(mean["val_acc"]).to_numpy(), "o-", color=color, markersize=4, label=label)
    # as in Chollet's plots: where the head phase ends, read from the curves (a step budget or the stopping rule
    # decides it, not the epochs key); with seeds stopped at different epochs, where the first one starts
    starts = merged.loc[merged["regime"] == "finetune"].groupby("seed")["step"].min()
    for ax, name in zip(axes, ("raw", f"EMA {EMA_FACTOR:.1f}"), strict=True):
        if len(starts):
            label = "start fine-tuning" if starts.nunique() == 1 else "start fine-tuning (earliest seed)"
            ax.axvline(starts.min() + 0.5, color="grey", linestyle="--", linewidth=1, label=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"validation accuracy ({name})")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        _legend(ax)
    axes[0].set_ylabel("val_acc")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


LINESTYLES = ("-", "--", ":", "-.")


def _regime_lines(table: pd.DataFrame, others: list[str]) -> Iterable[tuple[str, dict[str, Any], pd.DataFrame]]:
    """(regime, plot style, rows) for each regime and combination of the other varying keys.

    Colour says the regime, line style the combination of other keys (named in the legend).
    """
    groups = table.groupby(others, sort=False) if others else [((), table)]
    for i, (values, rows) in enumerate(groups):
        values = values if isinstance(values, tuple) else (values,)
        suffix = ", ".join(f"{k}={v}" for k, v in zip(others, values, strict=True))
        for regime in REGIMES:
            have = rows[rows[f"{regime}_test_acc_mean"].notna()]
            if not have.empty:
                style = {
                    "color": REGIME_COLORS[regime],
                    "linestyle": LINESTYLES[i % len(LINESTYLES)],
                    "label": REGIME_LABELS[regime] + (f" ({suffix})" if suffix else ""),
                }
                yield regime, style, have


def _ci(rows: pd.DataFrame, regime: str) -> tuple[pd.Series, pd.Series]:
    """The 95% interval as drawn: clipped to [0, 1], where an accuracy lives (the CSV keeps the raw t interval)."""
    return rows[f"{regime}_test_acc_ci95_lo"].clip(0, 1), rows[f"{regime}_test_acc_ci95_hi"].clip(0, 1)


def _ci_errors(rows: pd.DataFrame, regime: str) -> np.ndarray:
    mean = rows[f"{regime}_test_acc_mean"]
    lo, hi = _ci(rows, regime)
    lower = (mean - lo).fillna(0)
    upper = (hi - mean).fillna(0)
    return np.vstack([lower.to_numpy(), upper.to_numpy()])


def unfreeze_figure(table: pd.DataFrame) -> Figure:
    """Test accuracy against the fine-tuning boundary, boundaries in network order, 95% CI bars.

    Scratch and frozen do not depend on the boundary; they are drawn per boundary anyway (each job
    trained them) and so show the seed-to-seed noise level against which fine-tuning's gain is read.
    """
    keys = row_keys_of(table)
    backbone_names = list(dict.fromkeys(table["backbone"]))
    fig, axes = plt.subplots(1, len(backbone_names), figsize=(6.5 * len(backbone_names), 6), squeeze=False)
    others = _varying(table, keys, ("unfreeze_at", "backbone"))
    for ax, backbone in zip(axes[0], backbone_names, strict=True):
        part = table[table["backbone"] == backbone]
        order = sorted(part["unfreeze_at"].unique(), key=lambda layer: (boundary_order(backbone, layer), layer))
        position = {layer: i for i, layer in enumerate(order)}
        for regime, style, rows in _regime_lines(part, others):
            rows = rows.assign(_x=rows["unfreeze_at"].map(position)).sort_values("_x")
            y, yerr = rows[f"{regime}_test_acc_mean"], _ci_errors(rows, regime)
            ax.errorbar(rows["_x"], y, yerr=yerr, marker="o", capsize=3, **style)
        ax.set_xticks(range(len(order)), order, rotation=30, ha="right")
        ax.set_xlabel(f"unfreeze_at ({backbone}, bottom to top)")
        ax.set_ylabel("test accuracy (mean, 95% CI)")
        ax.grid(alpha=0.3)
        _legend(ax, below=True)  # colour: regime, line style: the other keys; over the lines it hid both
    fig.tight_layout()
    return fig


def fraction_figure(table: pd.DataFrame) -> Figure:
    """Test accuracy against the fraction of training data, one line per regime, 95% CI bands."""
    keys = row_keys_of(table)
    others = _varying(table, keys, ("data_fraction",))
    fig, ax = plt.subplots(figsize=(7, 6))
    for regime, style, rows in _regime_lines(table, others):
        rows = rows.assign(_x=pd.to_numeric(rows["data_fraction"], errors="coerce")).sort_values("_x")
        ax.errorbar(rows["_x"], rows[f"{regime}_test_acc_mean"], yerr=_ci_errors(rows, regime), marker="o", **style)
        lo, hi = _ci(rows, regime)
        ax.fill_between(rows["_x"], lo, hi, color=style["color"], alpha=0.15)  # the band between fractions
    fractions = sorted(pd.to_numeric(table["data_fraction"], errors="coerce").dropna().unique())
    ax.set_xscale("log")  # fractions such as 0.05 ... 1.0 are spread by ratio, not difference
    ax.set_xticks(fractions, [f"{f:g}" for f in fractions])
    ax.minorticks_off()
    ax.set_xlabel("data_fraction (of the training split, log scale)")
    ax.set_ylabel("test accuracy (mean, 95% CI)")
    ax.grid(alpha=0.3)
    _legend(ax, below=True)
    fig.tight_layout()
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")  # the legends below the axes included
    close(fig)
    return path


def single_value_axes(table: pd.DataFrame) -> dict[str, str]:
    """Summary figures that would have one x position, and why: {file name: reason}. They say nothing."""
    skipped = {}
    if table.groupby("backbone")["unfreeze_at"].nunique().max() < 2:
        skipped[FIGURE_UNFREEZE] = (
            f"one unfreeze_at value per backbone ({', '.join(map(str, table['unfreeze_at'].unique()))})"
        )
    if table["data_fraction"].nunique() < 2:
        skipped[FIGURE_FRACTION] = f"one data_fraction value ({table['data_fraction'].iloc[0]})"
    return skipped


def write_figures(table: pd.DataFrame, finished: pd.DataFrame, curves: pd.DataFrame, out: Path) -> list[Path]:
    """The per-configuration curves (named by the table's `config` number) and the study figures that have an x axis.

    A summary figure with a single x value is not drawn (and a stale one from an earlier report is removed).
    """
    keys = row_keys_of(table)
    for stale in [*out.glob(FIGURE_CURVES.replace("{:02d}", "*")), out / FIGURE_UNFREEZE, out / FIGURE_FRACTION]:
        stale.unlink(missing_ok=True)  # a previous report of other configurations
    written = []
    ran = regimes_run(table)
    title_keys = [k for k in keys if table[k].nunique() > 1 or used_key(k, ran)]  # no unused config defaults
    runs_by_config = finished.merge(table[["config", *keys]], on=keys)
    for config, runs in runs_by_config.groupby("config"):
        row = table[table["config"] == config].iloc[0]
        hidden = decided_by_budget(str(row.get("budget", "")))
        title = f"config {config}: " + _title({k: row[k] for k in title_keys if k not in hidden and shown(k, row[k])})
        written.append(_save(curves_figure(runs, curves, title), out / FIGURE_CURVES.format(config)))
    if not table[[f"{r}_test_acc_mean" for r in REGIMES]].notna().any().any():
        log.info("no test_acc in any run (no test split): test-accuracy figures skipped")
        return written
    skipped = single_value_axes(table)
    for name, reason in skipped.items():
        log.info("%s skipped: %s, a single x position", name, reason)
    if FIGURE_UNFREEZE not in skipped:
        written.append(_save(unfreeze_figure(table), out / FIGURE_UNFREEZE))
    if FIGURE_FRACTION not in skipped:
        written.append(_save(fraction_figure(table), out / FIGURE_FRACTION))
    return written
