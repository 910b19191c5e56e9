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


# --- seeds and test images together -----------------------------------------------------------------------

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 20261129  # fixed: a report regenerated from the same runs gives the same intervals and p-values


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, level: float = LEVEL, seed: int = BOOTSTRAP_SEED
) -> dict[str, float]:
    """Accuracy of A minus accuracy of B with both sources of uncertainty: the seeds (training) and the test images.

    `a` and `b` are 0/1 correctness arrays of shape (seeds, images), row s of both from the same seed (the same
    job) and column i the same test image. Each resample draws seeds with replacement and images with
    replacement, the same draw for both regimes (so the comparison stays paired on both axes), and takes the
    mean difference. Returns the observed difference, the percentile interval and a two-sided p-value (twice the
    smaller share of resamples on either side of 0, with the +1 correction so it is never 0).
    """
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    n_seeds, n_images = diff.shape
    rng = np.random.default_rng(seed)
    seed_counts = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=resamples)  # (B, seeds)
    image_counts = rng.multinomial(n_images, np.full(n_images, 1 / n_images), size=resamples)  # (B, images)
    stats_b = np.einsum("bs,si,bi->b", seed_counts, diff, image_counts) / (n_seeds * n_images)
    low, high = np.quantile(stats_b, [(1 - level) / 2, (1 + level) / 2])
    below, above = (stats_b <= 0).sum(), (stats_b >= 0).sum()
    p = float(min(1.0, 2 * (min(below, above) + 1) / (resamples + 1)))
    return {"mean": float(diff.mean()), "ci_lo": float(low), "ci_hi": float(high), "p": p, "n": n_seeds}


def mcnemar(a: np.ndarray, b: np.ndarray) -> float:
    """McNemar's exact test of one seed's two regimes on the same test images: among the images exactly one of
    them classifies correctly, is A right as often as B? (a binomial test of the discordant pairs at 1/2)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def holm(p_values: np.ndarray | list[float]) -> np.ndarray:
    """Holm's step-down adjustment (family-wise error): the k-th smallest p times (m - k + 1), made monotone,
    capped at 1. NaN stays NaN and is not counted in the family."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = len(order)
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[i]))
        out[i] = running
    return out


def benjamini_hochberg(p_values: np.ndarray | list[float]) -> np.ndarray:
    """Benjamini-Hochberg (false discovery rate), scipy's `false_discovery_control`; NaN stays NaN."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    valid = ~np.isnan(p)
    if valid.any():
        out[valid] = stats.false_discovery_control(p[valid], method="bh")
    return out


ADJUSTMENTS = {"holm": holm, "bh": benjamini_hochberg}


def seeds_for_power(mean_diff: float, sd_diff: float, power: float = 0.8, alpha: float = 1 - LEVEL) -> float:
    """How many seeds a two-sided paired t-test needs to detect a difference of `mean_diff` between regimes, when
    the per-seed differences spread with `sd_diff`, with probability `power` at level `alpha`. Exact, from the
    noncentral t distribution; NaN when there is no spread or no difference to detect, inf beyond 10,000."""
    if not np.isfinite(mean_diff) or not np.isfinite(sd_diff) or sd_diff <= 0 or mean_diff == 0:
        return float("nan")
    effect = abs(mean_diff) / sd_diff
    for n in range(2, 10_001):
        df = n - 1
        critical = stats.t.ppf(1 - alpha / 2, df)
        nc = effect * np.sqrt(n)
        achieved = stats.nct.sf(critical, df, nc) + stats.nct.cdf(-critical, df, nc)
        if achieved >= power:
            return float(n)
    return float("inf")
