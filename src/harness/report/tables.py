"""The summary table of a study: aggregation over seeds, the paired test, Markdown and LaTeX."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from harness import backbones, stats
from harness.errors import HarnessError
from harness.report.runs import (
    CURVE_STATS,
    DIFF,
    MISSING,
    NUMERIC_KEYS,
    REGIME_LABELS,
    REGIMES,
    STATS,
    finished_runs,
    row_keys,
)

log = logging.getLogger("harness.report")


# ------------------------------------------------------------------------------------------ aggregation


def boundary_order(backbone: str, layer: str) -> int:
    try:
        return backbones.boundary_index(backbone, layer)
    except (HarnessError, ValueError):
        return 10_000  # unknown backbone or layer: after the known ones, alphabetically


def _sorted_rows(table: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Rows in study order: boundaries in network order, numbers numerically, the rest alphabetically."""
    order = table[list(keys)].copy()
    for key in NUMERIC_KEYS:
        order[key] = pd.to_numeric(order[key], errors="coerce")
    order["_boundary"] = [boundary_order(b, u) for b, u in zip(table["backbone"], table["unfreeze_at"], strict=True)]
    by = ["backbone", "_boundary", *[k for k in keys if k != "backbone"]]
    return table.loc[order.sort_values(by, kind="stable").index].reset_index(drop=True)


def best_validation(finished: pd.DataFrame, curves: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Best epoch of the seed-mean validation curve of each (configuration, regime).

    The seeds' curves are averaged per epoch first, so the epoch is one number that says how long to
    train that configuration (Chollet 5.3's reading of the curves), not a mean of noisy per-seed argmaxes.
    """
    group = [*keys, "regime"]
    merged = curves.dropna(subset=["val_acc"]).merge(finished[["run_id", *group]], on="run_id")
    if merged.empty:
        return pd.DataFrame(columns=list(CURVE_STATS), index=pd.MultiIndex.from_tuples([], names=group))
    mean_curve = merged.groupby([*group, "step"], sort=False)["val_acc"].mean().reset_index()
    best = mean_curve.loc[mean_curve.groupby(group, sort=False)["val_acc"].idxmax()]
    return pd.DataFrame(
        {"best_val_acc": best["val_acc"].to_numpy(), "best_val_epoch": (best["step"] + 1).to_numpy()},
        index=pd.MultiIndex.from_frame(best[group]),
    )


def paired_differences(finished: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Fine-tuned minus frozen test_acc, paired by (configuration, seed): the frozen run of the same job."""
    columns = [f"{DIFF}_{s}" for s in ("n", "mean", "std", "ci95_lo", "ci95_hi", "t", "p")]
    sides = finished[finished["regime"].isin(["frozen", "finetune"])]
    wide = sides.set_index([*keys, "seed", "regime"])["test_acc"].unstack("regime")
    if wide.empty or not {"frozen", "finetune"} <= set(wide.columns):
        return pd.DataFrame(columns=columns, index=pd.MultiIndex.from_tuples([], names=list(keys)))
    tests = wide.groupby(level=list(keys), sort=False).apply(
        lambda g: pd.Series(stats.paired_test(g["finetune"], g["frozen"]))
    )
    tests = tests.rename(columns={"ci_lo": "ci95_lo", "ci_hi": "ci95_hi"}).add_prefix(f"{DIFF}_")
    return tests[columns]


def summarize(runs: pd.DataFrame, curves: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per configuration, scratch / frozen / finetune side by side, aggregated over seeds.

    Per regime: n (finished runs = seeds), mean, std (ddof=1) and 95% Student-t interval of test_acc,
    best seed-mean val_acc and its epoch (needs `curves`, see `load_curves`), mean train_time_s and the
    seeds. Then the paired fine-tuned - frozen difference (ttest_rel; NaN below two pairs). Only FINISHED
    runs count (see `finished_runs`); a configuration missing a regime has n = 0 and blanks there.
    """
    finished = finished_runs(runs)
    keys = row_keys(finished)
    if finished.empty:
        return pd.DataFrame(columns=["config", *keys])
    group = [*keys, "regime"]
    per = finished.groupby(group, sort=False).agg(
        n=("run_id", "size"),
        n_test=("test_acc", "count"),
        test_acc_mean=("test_acc", "mean"),
        test_acc_std=("test_acc", "std"),
        train_time_s=("train_time_s", "mean"),
        seeds=("seed", lambda s: ",".join(sorted(s, key=lambda v: (len(v), v)))),
    )
    half = stats.t_half_width(per["test_acc_std"], per["n_test"])
    per["test_acc_ci95_lo"] = per["test_acc_mean"] - half
    per["test_acc_ci95_hi"] = per["test_acc_mean"] + half
    best = best_validation(finished, curves, keys) if curves is not None else None
    per = per.join(best) if best is not None else per.assign(best_val_acc=np.nan, best_val_epoch=np.nan)
    regime_stats = [*STATS, *CURVE_STATS, "train_time_s", "seeds"]
    wide = per[regime_stats].unstack("regime")
    wide = wide.reindex(columns=pd.MultiIndex.from_product([regime_stats, REGIMES]))
    wide = wide.swaplevel(axis=1).reindex(columns=pd.MultiIndex.from_product([REGIMES, regime_stats]))
    wide.columns = [f"{regime}_{stat}" for regime, stat in wide.columns]
    for regime in REGIMES:
        wide[f"{regime}_n"] = wide[f"{regime}_n"].fillna(0).astype(int)
        wide[f"{regime}_best_val_epoch"] = wide[f"{regime}_best_val_epoch"].astype("Int64")
    table = wide.join(paired_differences(finished, keys))
    table[f"{DIFF}_n"] = table[f"{DIFF}_n"].fillna(0).astype(int)
    table = _sorted_rows(table.reset_index(), keys)
    table.insert(0, "config", range(1, len(table) + 1))
    return table


# ---------------------------------------------------------------------------------------------- formatting


def _acc(x: float) -> str:
    return MISSING if pd.isna(x) else f"{x:.3f}"


def _signed(x: float) -> str:
    return MISSING if pd.isna(x) else f"{x:+.3f}"


def _interval(lo: float, hi: float, fmt=_acc) -> str:
    return MISSING if pd.isna(lo) or pd.isna(hi) else f"[{fmt(lo)}, {fmt(hi)}]"


def _p(x: float) -> str:
    return MISSING if pd.isna(x) else f"{x:.3g}"


def shown_keys(table: pd.DataFrame) -> tuple[list[str], dict[str, str]]:
    """Row keys worth a column (backbone, unfreeze_at, and whatever varies) and the constant rest."""
    keys = [c for c in table.columns if c in row_keys_of(table)]
    shown = [k for k in keys if k in ("backbone", "unfreeze_at") or table[k].nunique() > 1]
    common = {k: str(table[k].iloc[0]) for k in keys if k not in shown and len(table)}
    return shown, common


def row_keys_of(table: pd.DataFrame) -> list[str]:
    """The configuration columns of a `summarize` table (between `config` and the first regime column)."""
    cols = list(table.columns)
    return cols[1 : cols.index(f"{REGIMES[0]}_n")]


def display_table(table: pd.DataFrame, latex: bool = False) -> pd.DataFrame:
    """The summary as strings for reading: (group, column) MultiIndex columns, blanks as '–'.

    Regimes that no run of the study has are left out (the CSV keeps them, for a stable schema).
    """
    shown, _ = shown_keys(table)
    pm = "$\\pm$" if latex else "±"
    delta = "$\\Delta$ fine-tuned $-$ frozen" if latex else "Δ fine-tuned − frozen"
    out: dict[tuple[str, str], pd.Series] = {("", "config"): table["config"].astype(str)}
    for key in shown:
        out[("", key)] = table[key].astype(str)
    for regime in REGIMES:
        if not table[f"{regime}_n"].any():
            continue
        label = REGIME_LABELS[regime]
        c = {stat: table[f"{regime}_{stat}"] for stat in (*STATS, *CURVE_STATS, "train_time_s")}
        out[(label, "n")] = c["n"].astype(str)
        out[(label, f"test acc {pm} sd")] = [
            MISSING if pd.isna(m) else f"{m:.3f}" + ("" if pd.isna(s) else f" {pm} {s:.3f}")
            for m, s in zip(c["test_acc_mean"], c["test_acc_std"], strict=True)
        ]
        out[(label, "95% CI")] = [
            _interval(lo, hi) for lo, hi in zip(c["test_acc_ci95_lo"], c["test_acc_ci95_hi"], strict=True)
        ]
        out[(label, "best val (epoch)")] = [
            MISSING if pd.isna(v) else f"{v:.3f} ({int(e)})"
            for v, e in zip(c["best_val_acc"], c["best_val_epoch"], strict=True)
        ]
        out[(label, "time s")] = [MISSING if pd.isna(t) else f"{t:.1f}" for t in c["train_time_s"]]
    if table[f"{DIFF}_n"].any():
        d = {s: table[f"{DIFF}_{s}"] for s in ("n", "mean", "ci95_lo", "ci95_hi", "p")}
        out[(delta, "pairs")] = d["n"].astype(str)
        out[(delta, "mean")] = [_signed(x) for x in d["mean"]]
        out[(delta, "95% CI")] = [_interval(lo, hi, _signed) for lo, hi in zip(d["ci95_lo"], d["ci95_hi"], strict=True)]
        out[(delta, "p (paired t)")] = [_p(x) for x in d["p"]]
    shown_df = pd.DataFrame({k: list(v) for k, v in out.items()})
    shown_df.columns = pd.MultiIndex.from_tuples(out.keys())
    return shown_df


def to_markdown(table: pd.DataFrame) -> str:
    """GitHub Markdown: the table, then the configuration shared by every row."""
    shown = display_table(table)
    shown.columns = [f"{group} {name}".strip() for group, name in shown.columns]
    _, common = shown_keys(table)
    text = shown.to_markdown(index=False, disable_numparse=True)
    if common:
        text += "\n\nAll rows: " + ", ".join(f"{k}={v}" for k, v in common.items()) + "\n"
    return text + "\n"


_LATEX_SPECIALS = str.maketrans(
    {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
        "–": "--",
    }
)


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in a config value or name (layer names have underscores)."""
    return str(text).translate(_LATEX_SPECIALS)


def to_latex(table: pd.DataFrame) -> str:
    """A booktabs `tabular` for \\input into a paper (needs \\usepackage{booktabs}); notes as comments."""
    shown = display_table(table, latex=True)
    escaped_cells = shown.map(lambda v: v if "$" in v else latex_escape(v))
    escaped_cells.columns = pd.MultiIndex.from_tuples(
        [tuple(v if "$" in v else latex_escape(v) for v in pair) for pair in shown.columns]
    )
    n_keys = 1 + len(shown_keys(table)[0])  # config number and configuration: left; numbers: right
    column_format = "l" * n_keys + "r" * (shown.shape[1] - n_keys)
    styler = escaped_cells.style.hide(axis="index")
    text = styler.to_latex(hrules=True, multicol_align="c", column_format=column_format)
    _, common = shown_keys(table)
    notes = [f"% all rows: {latex_escape(', '.join(f'{k}={v}' for k, v in common.items()))}"] if common else []
    notes.append("% needs \\usepackage{booktabs}; cells: mean $\\pm$ sd over seeds, Student-t 95% CI")
    return text + "\n".join(notes) + "\n"
