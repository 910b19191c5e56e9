"""Transferability estimates beside the measured accuracies, and how well each ranks the study's configurations.

Each run that trains on frozen features logs two estimates of how well they transfer, computed before it trains
(`harness.training.transferability`): the frozen run's on the pooled top features, a fine-tuning run's on its
cut's. Over the configurations, Kendall's tau-b (`scipy.stats.kendalltau`) between an estimate and a measured
mean test accuracy says how well the estimate would have ranked them without training; its p-values are
Holm-adjusted over the pairs shown. Read from results.csv's columns alone, so a re-rendered report has it too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.report.render import Section, key_value, p_value, pct
from harness.report.runs import MISSING, REGIME_LABELS
from harness.training import specs

ESTIMATES = {"logme": "LogME", "knn_loo_acc": "k-NN LOO acc %"}  # tables.ESTIMATES, labelled
# whose mean test accuracy the estimates are ranked against: every regime on the pretrained backbone
MEASURED = tuple(s.name for s in specs.REGIMES.values() if s.pretrained)
MIN_CONFIGURATIONS = 3  # fewer give no ranking worth a tau
DRAWS = 1000  # redraws of the measured means for tau's interval from the seeds' spread


def estimate_columns(table: pd.DataFrame) -> list[str]:
    """The estimate columns of results.csv that hold a value: `<regime>_<estimate>`."""
    return [c for c in table.columns if c.endswith(tuple(f"_{e}" for e in ESTIMATES)) and table[c].notna().any()]


def rank_agreement(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (estimate column, measured regime) with at least MIN_CONFIGURATIONS configurations holding
    both, neither constant over them: n, Kendall's tau-b, its p, the Holm-adjusted p and tau's interval from
    the seeds' spread."""
    from scipy import stats as scipy_stats

    from harness.report import stats

    rows = []
    for column in estimate_columns(table):
        for regime in MEASURED:
            measured = f"{regime}_test_acc_mean"
            if measured not in table:
                continue
            both = table[[column, measured]].apply(pd.to_numeric, errors="coerce").dropna()
            if len(both) < MIN_CONFIGURATIONS:
                continue
            tau, p = scipy_stats.kendalltau(both[column], both[measured])
            if np.isnan(tau):
                continue  # a constant side (one top for every cut, one head phase for every cut) ranks nothing
            low, high = seed_interval(table.loc[both.index], column, regime)
            rows.append({"estimate": column, "measured": regime, "n": len(both), "tau": tau, "p": p,
                         "tau_lo": low, "tau_hi": high})  # fmt: skip
    frame = pd.DataFrame(rows, columns=["estimate", "measured", "n", "tau", "p", "tau_lo", "tau_hi"])
    frame["p_holm"] = stats.holm(frame["p"].to_numpy()) if len(frame) else []
    return frame


def seed_interval(table: pd.DataFrame, column: str, regime: str, draws: int = DRAWS) -> tuple[float, float]:
    """A 95% interval of tau from the seeds' spread: each configuration's mean accuracy drawn again from a normal
    with its standard error (the seeds' standard deviation over the square root of their count; none with one
    seed), tau recomputed per draw (seeded), its 2.5th and 97.5th percentiles. The estimates do not depend on
    the seed; how much the measured order itself is noise is what this says."""
    from scipy import stats as scipy_stats

    mean = pd.to_numeric(table[f"{regime}_test_acc_mean"], errors="coerce").to_numpy(float)
    std = pd.to_numeric(table.get(f"{regime}_test_acc_std", pd.Series(0.0, table.index)), errors="coerce")
    count = pd.to_numeric(table.get(f"{regime}_n", pd.Series(1, table.index)), errors="coerce")  # seeds
    error = (std.fillna(0.0) / np.sqrt(count.clip(lower=1))).to_numpy(float)
    estimate = pd.to_numeric(table[column], errors="coerce").to_numpy(float)
    if not error.any():
        return np.nan, np.nan
    rng = np.random.default_rng(0)
    drawn = [scipy_stats.kendalltau(estimate, mean + error * rng.standard_normal(len(mean)))[0] for _ in range(draws)]
    taus = np.asarray(drawn, float)
    taus = taus[~np.isnan(taus)]
    return (float(np.percentile(taus, 2.5)), float(np.percentile(taus, 97.5))) if len(taus) else (np.nan, np.nan)


def _label(column: str) -> str:
    regime, estimate = next((column.removesuffix(f"_{e}"), e) for e in ESTIMATES if column.endswith(f"_{e}"))
    where = "cut" if regime in specs.REGIMES and specs.spec(regime).unfreezes else "top"
    return f"{ESTIMATES[estimate].removesuffix(' %')} ({REGIME_LABELS.get(regime, regime)}, {where})"


def sections(table: pd.DataFrame, varying: list[str]) -> list[Section]:
    """The estimates beside the measured accuracies, then the rank agreement; none when no run logged estimates."""
    columns = estimate_columns(table)
    if not columns:
        return []

    def cell(column: str) -> pd.Series:
        values = pd.to_numeric(table[column], errors="coerce")
        return (
            values.map(pct)
            if column.endswith("_knn_loo_acc")
            else values.map(lambda v: MISSING if pd.isna(v) else f"{v:.3f}")
        )

    ran = [r for r in MEASURED if f"{r}_test_acc_mean" in table and table[f"{r}_test_acc_mean"].notna().any()]
    measured = {f"{REGIME_LABELS[r]} test acc %": table[f"{r}_test_acc_mean"].map(pct) for r in ran}
    beside = pd.DataFrame(
        {**{k: table[k].map(key_value) for k in varying}, **{_label(c): cell(c) for c in columns}, **measured}
    )
    notes = [
        "Computed before training, on the pooled training features each run trained on (the frozen run's top, a "
        "fine-tuning run's cut), mean over seeds: LogME (You et al., ICML 2021), the evidence per image of a "
        "Bayesian linear model of the labels (higher: more linearly usable), and the leave-one-out accuracy of a "
        "10-nearest-neighbour vote."
    ]
    out = [Section("Transferability estimates", beside, "", notes, len(varying))]
    agreement = rank_agreement(table)
    if len(agreement):
        frame = pd.DataFrame(
            {
                "estimate": agreement["estimate"].map(_label),
                "ranked against": agreement["measured"].map(lambda r: f"{REGIME_LABELS[r]} test acc"),
                "configurations": agreement["n"].astype(str),
                "Kendall's tau": agreement["tau"].map(lambda t: MISSING if pd.isna(t) else f"{t:+.2f}"),
                "tau 95% (seeds)": [
                    MISSING if pd.isna(lo) else f"[{lo:+.2f}, {hi:+.2f}]"
                    for lo, hi in zip(agreement["tau_lo"], agreement["tau_hi"], strict=True)
                ],
                "p": agreement["p"].map(p_value),
                "p (Holm)": agreement["p_holm"].map(lambda p: p_value(p, adjusted=True)),
            }
        )
        notes = [
            "Kendall's tau-b between each estimate and the measured mean test accuracy over the configurations "
            "(1: the same order; 0: unrelated), scipy.stats.kendalltau; p-values Holm-adjusted over these rows; "
            "pairs where either side is the same for every configuration rank nothing and are left out. "
            f"The interval is tau's spread when each configuration's mean is drawn again ({DRAWS} times) from a "
            "normal with its standard error over seeds: how much of the measured order is the seeds' noise."
        ]
        out.append(Section("Do the estimates rank the configurations?", frame, "", notes, 2))
    return out
