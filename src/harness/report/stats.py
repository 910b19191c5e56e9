"""Small-sample statistics for seed replicates: Student-t intervals and the paired test.

Studies here have a handful of seeds per configuration, so normal-approximation intervals would be far
too narrow; everything uses the t distribution with n - 1 degrees of freedom and the sample std (ddof=1).
Undefined values (n < 2, or no spread between paired differences) are NaN, never 0.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

LEVEL = 0.95
# Accuracies are k / n_test, so "identical" differences can differ in the last bits (0.9 - 0.8 != 0.8 - 0.7);
# spread below this is no spread, or a paired test would report p ~ 1e-16 for nothing.
TIES = 1e-12


def _no_spread(x: pd.Series) -> bool:
    return len(x) >= 2 and float(x.max() - x.min()) <= TIES * max(1.0, float(x.abs().max()))


def t_half_width(std: pd.Series | np.ndarray | float, n: pd.Series | np.ndarray | int, level: float = LEVEL):
    """Half-width of the mean's Student-t interval (scipy's `t.interval` with scale std / sqrt(n)); NaN where n < 2.

    Vectorised over pandas columns so a whole summary table is done in one call.
    """
    n_arr = np.asarray(n, dtype=float)
    std_arr = np.asarray(std, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        df = np.where(n_arr >= 2, n_arr - 1, np.nan)
        scale = np.where(std_arr > 0, std_arr / np.sqrt(n_arr), np.nan)
        _, out = stats.t.interval(level, df, loc=0.0, scale=scale)
    out = np.where((std_arr == 0) & (n_arr >= 2), 0.0, out)  # no spread: a zero-width interval, not NaN
    if isinstance(std, pd.Series):
        return pd.Series(out, index=std.index)
    return out


def mean_ci(values: pd.Series | np.ndarray | list[float], level: float = LEVEL) -> dict[str, float]:
    """n, mean, std (ddof=1) and the Student-t interval of the mean of the non-missing values."""
    x = pd.Series(values, dtype=float).dropna()
    n = len(x)
    mean = float(x.mean()) if n else np.nan
    std = (0.0 if _no_spread(x) else float(x.std(ddof=1))) if n >= 2 else np.nan
    half = float(t_half_width(std, n, level)) if n >= 2 else np.nan
    return {"n": n, "mean": mean, "std": std, "ci_lo": mean - half, "ci_hi": mean + half}


def paired_test(
    after: pd.Series | np.ndarray, before: pd.Series | np.ndarray, level: float = LEVEL
) -> dict[str, float]:
    """Mean difference after - before over pairs (seeds), with scipy's ttest_rel and its confidence interval.

    Pairs with a missing side are dropped. With fewer than two pairs, or identical differences
    (zero variance, up to float noise), t and p are NaN: no test is possible, and that is what the
    table must say (identical differences keep their zero-width interval).
    """
    pairs = pd.DataFrame({"after": np.asarray(after, dtype=float), "before": np.asarray(before, dtype=float)}).dropna()
    diff = mean_ci(pairs["after"] - pairs["before"], level)
    t_stat = p_value = np.nan
    if len(pairs) >= 2 and not _no_spread(pairs["after"] - pairs["before"]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # zero variance: scipy warns and returns NaN
            result = stats.ttest_rel(pairs["after"], pairs["before"])
        t_stat, p_value = float(result.statistic), float(result.pvalue)
        interval = result.confidence_interval(level)
        diff["ci_lo"], diff["ci_hi"] = float(interval.low), float(interval.high)
    return {**diff, "t": t_stat, "p": p_value}
