"""The report's figures: validation curves per configuration, and test accuracy against boundary and data fraction.

Titles are short; the keys every run shares go in a caption line under the axes. Every interval drawn is a
95% interval of a mean over seeds, and a point from a single run is labelled as such, never as an interval.
The summary figures have a second panel with the paired difference (fine-tuned − frozen) and its interval
from the report's comparisons, on its own scale: a 0.4-point difference is invisible on an accuracy axis.
"""

from __future__ import annotations

import logging
import re
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from harness.report.render import key_value
from harness.report.runs import REGIME_COLORS, REGIME_LABELS, REGIMES
from harness.report.tables import boundary_order, decided_by_budget, regimes_run, row_keys_of, split_keys
from harness.training import specs
from harness.training.figures import EMA_FACTOR, close, ema, plt  # pyplot with the Agg backend figures.py chose

log = logging.getLogger("harness.report")

FIGURE_CURVES = "val_acc_curves{}.png"  # {}: "" for one configuration, else "_<its varying keys>"
FIGURE_UNFREEZE = "test_acc_vs_unfreeze_at.png"
FIGURE_FRACTION = "test_acc_vs_data_fraction.png"


def curves_name(values: dict[str, Any]) -> str:
    """The curves figure of a configuration, named by its varying keys: val_acc_curves_augment-yes.png."""
    slug = "_".join(f"{k}-{key_value(v)}" for k, v in values.items())
    return FIGURE_CURVES.format("_" + re.sub(r"[^A-Za-z0-9_.=-]+", "-", slug) if slug else "")


def caption(fig: Figure, constant: dict[str, Any], width: int = 130) -> None:
    """The keys every run of the figure shares, as a caption line under the axes (not a four-line title)."""
    text = ", ".join(f"{k}={key_value(v)}" for k, v in constant.items())
    if text:
        fig.text(0.01, -0.01, textwrap.fill(text, width), fontsize=7, va="top", ha="left", color="0.3")


def smooth_phase(curve: pd.DataFrame) -> pd.Series:
    """A phase's curve smoothed from its first trained epoch: epoch 0 (before training, near chance) is drawn as
    measured, since an average seeded with it would drag a short phase's smoothed curve points below the raw."""
    trained = curve["epoch"] >= 1
    smoothed = pd.Series(ema(curve.loc[trained, "val_acc"]), index=curve.index[trained], dtype=float)
    return pd.concat([curve.loc[~trained, "val_acc"], smoothed]).loc[curve.index]


def _legend(ax, where: str = "best") -> None:
    """A legend inside the axes that shows the line styles (long handles)."""
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    labels = [textwrap.fill(label, 40, break_long_words=False) for label in labels]
    handles = [h.lines[0] if isinstance(h, ErrorbarContainer) else h for h in handles]  # the line, not the bar
    ax.legend(handles, labels, fontsize=7, handlelength=3, loc=where, framealpha=0.85)


def phase_curves(finished: pd.DataFrame, curves: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """Per run and epoch: the phase's own epoch (0: before training, then 1, 2, ...) and where it is drawn.

    Scratch and the head phase start at epoch 0. Fine-tuning continues a head phase that the stopping rule may
    have ended at another epoch in every seed: each seed's fine-tuning is aligned on its own start and drawn
    after the seeds' mean head length, so its mean is over the same fine-tuning epoch of every seed.
    Returns the curves (run_id, regime, seed, epoch, x, val_acc) and x of the switch (NaN without fine-tuning).
    """
    merged = curves.merge(finished[["run_id", "regime", "seed"]], on="run_id")
    trained = merged["step"] >= 0
    first = merged[trained].groupby("run_id")["step"].min()
    merged["epoch"] = np.where(trained, merged["step"] - merged["run_id"].map(first) + 1, 0)
    continuing = {s.name: s.starts_from for s in specs.REGIMES.values() if s.starts_from}
    shift, switch = {}, float("nan")
    for regime, start in continuing.items():
        heads = merged[merged["regime"] == start].groupby("seed")["epoch"].max()
        if len(heads) and (merged["regime"] == regime).any():
            shift[regime] = switch = float(heads.mean())
    merged["x"] = merged["epoch"] + merged["regime"].map(shift).fillna(0).to_numpy()
    return merged, switch


def curves_figure(finished: pd.DataFrame, curves: pd.DataFrame, title: str, constant: dict[str, Any]) -> Figure:
    """Validation accuracy of one configuration's regimes, raw and EMA-smoothed side by side on the same epochs.

    Thin lines: seeds; thick: their mean at each epoch every seed ran. Smoothing restarts with each phase, so
    the switch to fine-tuning is not smeared into a jump, and starts at its first trained epoch (epoch 0 as
    measured).
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True, sharey=True)
    data, switch = phase_curves(finished, curves)
    for regime in REGIMES:
        part = data[data["regime"] == regime].dropna(subset=["val_acc"])
        if part.empty:
            continue
        color, label = REGIME_COLORS[regime], REGIME_LABELS[regime]
        seeds = part["seed"].nunique()
        per_epoch = part.groupby("epoch").agg(val_acc=("val_acc", "mean"), x=("x", "first"), seeds=("seed", "nunique"))
        mean = per_epoch[per_epoch["seeds"] == seeds]  # epochs every seed ran: a mean of the same seeds throughout
        for _, seed_curve in part.groupby("seed"):
            seed_curve = seed_curve.sort_values("epoch")
            axes[0].plot(seed_curve["x"], seed_curve["val_acc"], color=color, alpha=0.25, linewidth=1)
            axes[1].plot(seed_curve["x"], smooth_phase(seed_curve), color=color, alpha=0.25, linewidth=1)
        name = f"{label}, mean of {seeds} seeds" if seeds > 1 else f"{label}, single run"
        axes[0].plot(mean["x"], mean["val_acc"], "o-", color=color, markersize=3, label=name)
        mean = mean.reset_index().sort_values("epoch")
        axes[1].plot(mean["x"], smooth_phase(mean), "o-", color=color, markersize=3, label=name)
    for ax, name in zip(axes, ("raw", f"EMA {EMA_FACTOR:.1f}"), strict=True):
        if np.isfinite(switch):
            ax.axvline(switch + 0.5, color="grey", linestyle="--", linewidth=1, label="start fine-tuning (mean)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"validation accuracy ({name})", fontsize=9)
        ax.set_xlabel("epoch (0: before training)")
        ax.grid(alpha=0.3)
        _legend(ax, "lower right")
    axes[0].set_ylabel("val_acc")
    fig.suptitle(title, fontsize=10)
    caption(fig, constant)
    fig.tight_layout()
    return fig


LINESTYLES = ("-", "--", ":", "-.")


def _regime_lines(table: pd.DataFrame, others: list[str]) -> Iterable[tuple[str, dict[str, Any], pd.DataFrame]]:
    """(regime, plot style, rows) for each regime and combination of the other varying keys: colour says the
    regime, line style the other keys (named in the legend)."""
    groups = table.groupby(others, sort=False) if others else [((), table)]
    for i, (values, rows) in enumerate(groups):
        values = values if isinstance(values, tuple) else (values,)
        suffix = ", ".join(f"{k}={key_value(v)}" for k, v in zip(others, values, strict=True))
        for regime in REGIMES:
            have = rows[rows[f"{regime}_test_acc_mean"].notna()]
            if not have.empty:
                style = {"color": REGIME_COLORS[regime], "linestyle": LINESTYLES[i % len(LINESTYLES)],
                         "label": REGIME_LABELS[regime] + (f" ({suffix})" if suffix else "")}  # fmt: skip
                yield regime, style, have


def _errors(mean: pd.Series, lo: pd.Series, hi: pd.Series) -> np.ndarray:
    """Error bar lengths of a 95% interval clipped to [0, 1] (where an accuracy lives); none for a single run."""
    return np.vstack([(mean - lo.clip(0, 1)).fillna(0).to_numpy(), (hi.clip(0, 1) - mean).fillna(0).to_numpy()])


def _accuracy(ax, rows: pd.DataFrame, regime: str, x: pd.Series, style: dict[str, Any]) -> None:
    mean = rows[f"{regime}_test_acc_mean"]
    lo, hi = rows[f"{regime}_test_acc_ci95_lo"], rows[f"{regime}_test_acc_ci95_hi"]
    label = style["label"] + (" (single run)" if rows[f"{regime}_n"].max() < 2 else "")
    ax.errorbar(x, mean, yerr=_errors(mean, lo, hi), marker="o", capsize=3, **{**style, "label": label})


def _differences(ax, comparisons: pd.DataFrame, key: str, position: dict[Any, float], others: list[str]) -> None:
    """The paired difference fine-tuned − frozen per value of `key` (one line per combination of the other
    varying keys), with its interval, around a zero line."""
    better, baseline = specs.headline()
    diff = comparisons[(comparisons["better"] == better) & (comparisons["baseline"] == baseline)]
    groups = diff.groupby(others, sort=False) if others else [((), diff)]
    for i, (values, rows) in enumerate(groups):
        values = values if isinstance(values, tuple) else (values,)
        suffix = ", ".join(f"{k}={key_value(v)}" for k, v in zip(others, values, strict=True))
        rows = rows.assign(_x=rows[key].map(position)).dropna(subset=["_x"]).sort_values("_x")
        y = 100 * rows["mean"]
        err = np.vstack([(y - 100 * rows["ci_lo"]).to_numpy(), (100 * rows["ci_hi"] - y).to_numpy()])
        ax.errorbar(rows["_x"], y, yerr=err, marker="s", capsize=3, color=REGIME_COLORS[better],
                    linestyle=LINESTYLES[i % len(LINESTYLES)],
                    label=f"{REGIME_LABELS[better]} − {REGIME_LABELS[baseline]}, 95% CI"
                    + (f" ({suffix})" if suffix else ""))  # fmt: skip
    ax.axhline(0, color="grey", linewidth=1)
    ax.set_ylabel("Δ test acc (points)")
    ax.grid(alpha=0.3)
    _legend(ax)


def _seeds(table: pd.DataFrame) -> str:
    """The seeds behind the points: one number, or the range when some points have fewer (an unfinished sweep)."""
    counts = sorted({int(n) for r in regimes_run(table) for n in table[f"{r}_n"] if n > 0})
    return f"n = {counts[0]} seeds" if len(counts) == 1 else f"n = {counts[0]}-{counts[-1]} seeds"


def unfreeze_figure(table: pd.DataFrame, comparisons: pd.DataFrame) -> Figure:
    """Test accuracy against the fine-tuning boundary (network order), and the paired difference below it."""
    backbone = str(table["backbone"].iloc[0])
    fig, (ax, below) = plt.subplots(2, 1, figsize=(7, 7.5), sharex=True, height_ratios=(2, 1))
    order = sorted(table["unfreeze_at"].unique(), key=lambda layer: (boundary_order(backbone, layer), layer))
    position = {layer: float(i) for i, layer in enumerate(order)}
    others = [k for k in split_keys(table)[0] if k not in ("unfreeze_at",)]
    for regime, style, rows in _regime_lines(table, others):
        rows = rows.assign(_x=rows["unfreeze_at"].map(position)).sort_values("_x")
        _accuracy(ax, rows, regime, rows["_x"], style)
    ax.set_ylabel("test accuracy (mean, 95% CI)")
    ax.set_title(f"Test accuracy by fine-tuning boundary ({_seeds(table)})", fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax, "lower left")
    _differences(below, comparisons, "unfreeze_at", position, others)
    below.set_xticks(range(len(order)), order, rotation=30, ha="right")
    below.set_xlabel(f"unfreeze_at ({backbone}, bottom to top)")
    caption(fig, split_keys(table)[1])
    fig.tight_layout()
    return fig


def fraction_figure(table: pd.DataFrame, comparisons: pd.DataFrame, n_train: dict[str, int]) -> Figure:
    """Test accuracy against the fraction of training data (log scale, the training images on the top axis),
    with 95% bands, and the paired difference below it."""
    others = [k for k in split_keys(table)[0] if k != "data_fraction"]
    fig, (ax, below) = plt.subplots(2, 1, figsize=(7, 7.5), sharex=True, height_ratios=(2, 1))
    for regime, style, rows in _regime_lines(table, others):
        rows = rows.assign(_x=pd.to_numeric(rows["data_fraction"], errors="coerce")).sort_values("_x")
        _accuracy(ax, rows, regime, rows["_x"], style)
        if rows[f"{regime}_n"].max() >= 2:
            lo, hi = rows[f"{regime}_test_acc_ci95_lo"].clip(0, 1), rows[f"{regime}_test_acc_ci95_hi"].clip(0, 1)
            ax.fill_between(rows["_x"], lo, hi, color=style["color"], alpha=0.12)
    fractions = sorted(pd.to_numeric(table["data_fraction"], errors="coerce").dropna().unique())
    ax.set_xscale("log")  # fractions such as 0.01 ... 1.0 are spread by ratio, not difference
    top = ax.secondary_xaxis("top")
    top.set_xticks(fractions, [str(n_train.get(f"{f:g}", "")) for f in fractions])
    top.set_xlabel("training images")
    ax.set_ylabel("test accuracy (mean, 95% CI)")
    ax.set_title(f"Test accuracy by amount of training data ({_seeds(table)})", fontsize=10)
    ax.grid(alpha=0.3)
    _legend(ax, "lower right")
    fraction = pd.to_numeric(comparisons["data_fraction"], errors="coerce") if len(comparisons) else []
    _differences(below, comparisons.assign(_f=fraction), "_f", {f: f for f in fractions}, others)
    below.set_xscale("log")
    below.set_xticks(fractions, [f"{f:g}" for f in fractions])
    below.minorticks_off()
    below.set_xlabel("data_fraction (of the training split, log scale)")
    caption(fig, split_keys(table)[1])
    fig.tight_layout()
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")  # the caption under the axes included
    close(fig)
    return path


def single_value_axes(table: pd.DataFrame) -> dict[str, str]:
    """Summary figures that would have one x position, and why: {file name: reason}. They say nothing."""
    skipped = {}
    boundaries = table.groupby("backbone")["unfreeze_at"].nunique().max()
    if boundaries < 2 or table["backbone"].nunique() > 1:
        backbones = table["backbone"].nunique()
        skipped[FIGURE_UNFREEZE] = f"{boundaries} unfreeze_at value(s) per backbone, {backbones} backbone(s)"
    if table["data_fraction"].nunique() < 2:
        skipped[FIGURE_FRACTION] = f"one data_fraction value ({table['data_fraction'].iloc[0]})"
    return skipped


def write_figures(
    table: pd.DataFrame, comparisons: pd.DataFrame, finished: pd.DataFrame, curves: pd.DataFrame, out: Path
) -> list[Path]:
    """The curves of each configuration and the summary figures that have an x axis (a summary figure with a
    single x value is not drawn, and a stale one from an earlier report is removed)."""
    keys = row_keys_of(table)
    varying, constant = split_keys(table)
    for stale in [*out.glob(FIGURE_CURVES.format("*")), out / FIGURE_UNFREEZE, out / FIGURE_FRACTION]:
        stale.unlink(missing_ok=True)
    written = []
    runs_by_config = finished.merge(table[["config", *keys]], on=keys)
    for config, runs in runs_by_config.groupby("config"):
        row = table[table["config"] == config].iloc[0]
        values = {k: row[k] for k in varying}
        hidden = decided_by_budget(str(row.get("budget", "")))
        title = ", ".join(f"{k}={key_value(v)}" for k, v in values.items()) or "validation curves"
        shared = {k: v for k, v in constant.items() if k not in hidden}
        written.append(_save(curves_figure(runs, curves, title, shared), out / curves_name(values)))
    if not table[[f"{r}_test_acc_mean" for r in REGIMES]].notna().any().any():
        log.info("no test_acc in any run (no test split): test-accuracy figures skipped")
        return written
    skipped = single_value_axes(table)
    for name, reason in skipped.items():
        log.info("%s skipped: %s", name, reason)
    if FIGURE_UNFREEZE not in skipped:
        written.append(_save(unfreeze_figure(table, comparisons), out / FIGURE_UNFREEZE))
    if FIGURE_FRACTION not in skipped:
        sizes = finished.groupby("data_fraction")["n_train"].max() if "n_train" in finished else pd.Series(dtype=int)
        n_train = {f"{float(f):g}": int(n) for f, n in sizes.items() if pd.notna(n)}
        written.append(_save(fraction_figure(table, comparisons, n_train), out / FIGURE_FRACTION))
    return written
