"""Small-sample statistics for seed replicates: Student-t intervals, the paired test, the crossed seeds x images
test, power and multiple-comparison adjustments.

Studies here have a handful of seeds per configuration, so normal-approximation intervals would be far too narrow:
over seeds alone everything uses the t distribution with n - 1 degrees of freedom and the sample std (ddof=1);
over seeds and test images together, t with corrected Satterthwaite degrees of freedom (below). Undefined values
(n < 2, or no spread between paired differences) are NaN, never 0.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pandas as pd
from scipy import optimize, stats

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
#
# A regime's test accuracy varies with the seed (training) and with the test images (a finite sample of the
# images the task has), and every seed is tested on the same images: hard images stay hard. The table of 0/1
# outcomes (or of two regimes' paired differences) is a crossed design, seeds x images, and the variance of its
# grand mean is
#     var = sigma_seeds^2 / S + sigma_images^2 / I + sigma_residual^2 / (S * I) = (MS_S + MS_I - MS_E) / (S * I),
# with the two-way ANOVA's mean squares (one observation per cell), an unbiased estimate. Its reference is
# Student's t with Satterthwaite's degrees of freedom: near S - 1 when the seeds dominate (3 seeds get the wide
# tails of 2 degrees of freedom), near I - 1 when the test images do. Satterthwaite's plug-in is liberal at few
# seeds (7.8% at a nominal 5% with 3 seeds), because a seeds' mean square that happens to be small also raises
# the degrees of freedom; `df_shrink` corrects it. benchmarks/calibration.py checks the false-positive rate and
# coverage at 3, 5 and 10 seeds whatever the share of each source.
CROSSED = "crossed seeds x images, corrected Satterthwaite t"


@functools.cache
def df_shrink(n_seeds: int, n_images: int = 1000, alpha: float = 1 - LEVEL) -> float:
    """The factor the seeds' mean square is divided by in the degrees of freedom only (not in the variance), chosen
    so that the test's exact size stays closest to `alpha` over every mix of seeds', images' and residual variance.

    Exact under the design's own distribution: MS_S is a scaled chi-square with S - 1 degrees of freedom, and MS_I
    and MS_E (hundreds of degrees of freedom) are taken as known; the size is averaged over MS_S's quantiles on a
    grid of variance ratios, and the factor minimises the largest departure from `alpha` (3 seeds: 0.25, sizes
    3.4-5.0%; 5 seeds: 0.59; 10 seeds: 0.83; it tends to 1, plain Satterthwaite, as seeds grow: 1 beyond 50).
    """
    if n_seeds > 50:
        return 1.0
    k = n_seeds - 1
    w = stats.chi2.ppf((np.arange(400) + 0.5) / 400, k) / k  # MS_S / E[MS_S], by its quantiles
    ratios = np.concatenate([[0.0], np.logspace(-2, 3, 11)])
    seeds, images = (r[..., None] for r in np.meshgrid(ratios, ratios, indexing="ij"))  # in units of sigma_resid^2
    ms_s, ms_i = w * (1 + seeds), 1 + images

    def worst(shrink: float) -> float:
        df = _satterthwaite(ms_s, ms_i, 1.0, k, n_images, shrink)
        critical = stats.t.ppf(1 - alpha / 2, df)
        size = 2 * stats.norm.sf(critical * np.sqrt((ms_s + ms_i - 1) / (1 + seeds + images)))
        return float(np.abs(size.mean(axis=-1) - alpha).max())

    found = optimize.minimize_scalar(worst, bounds=(0.05, 1.0), method="bounded", options={"xatol": 1e-3})
    return float(found.x)


def _satterthwaite(ms_s, ms_i, ms_e, df_s: int, n_images: int, shrink: float):
    """Degrees of freedom of MS_S + MS_I - MS_E, with MS_S divided by `shrink` (see `df_shrink`)."""
    df_i, df_e = n_images - 1, df_s * (n_images - 1)
    total = ms_s / shrink + ms_i - ms_e
    spread = (ms_s / shrink) ** 2 / df_s + ms_i**2 / df_i + ms_e**2 / df_e
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, total**2 / spread, np.nan)


def crossed_components(x: np.ndarray) -> dict[str, np.ndarray]:
    """Mean, variance of the mean, its degrees of freedom and the variance components of (..., seeds, images)
    tables, vectorised over leading axes. `var` is the unbiased (MS_S + MS_I - MS_E) / (S * I), NaN where it is not
    positive; the components are the ANOVA estimates truncated at zero (for reading and for power)."""
    x = np.asarray(x, dtype=float)
    n_s, n_i = x.shape[-2:]
    mean = x.mean(axis=(-2, -1))
    rows, cols = x.mean(axis=-1), x.mean(axis=-2)
    ms_s = n_i * ((rows - mean[..., None]) ** 2).sum(axis=-1) / (n_s - 1)
    ms_i = n_s * ((cols - mean[..., None]) ** 2).sum(axis=-1) / (n_i - 1)
    resid = x - rows[..., :, None] - cols[..., None, :] + mean[..., None, None]
    ms_e = (resid**2).sum(axis=(-2, -1)) / ((n_s - 1) * (n_i - 1))
    total = ms_s + ms_i - ms_e
    return {
        "mean": mean,
        "var": np.where(total > 0, total, np.nan) / (n_s * n_i),
        "df": _satterthwaite(ms_s, ms_i, ms_e, n_s - 1, n_i, df_shrink(n_s, n_i)),
        "seeds": np.maximum(ms_s - ms_e, 0.0) / n_i,  # sigma_seeds^2
        "images": np.maximum(ms_i - ms_e, 0.0) / n_s,  # sigma_images^2
        "residual": ms_e,  # sigma_residual^2
    }


def crossed_test(x: np.ndarray, level: float = LEVEL) -> dict[str, float]:
    """The grand mean of a (seeds, images) table with its t interval and two-sided p against 0 (`CROSSED`).

    For one regime, `x` is each seed's 0/1 outcome on each test image (the interval of its accuracy); for a
    comparison, the difference of two regimes' outcomes on the same seeds (jobs) and images (p: no difference).
    With fewer than 2 seeds or images, NaN; with no spread at all, a zero-width interval and p NaN.
    """
    x = np.asarray(x, dtype=float)
    n_s, n_i = x.shape
    out: dict[str, float] = {"n": n_s, "images": n_i, "mean": float(x.mean()) if x.size else np.nan}
    nan = dict.fromkeys(("ci_lo", "ci_hi", "p", "df", "se", "var_seeds", "var_images", "var_residual"), np.nan)
    if n_s < 2 or n_i < 2:
        return {**out, **nan}
    parts = {k: float(v) for k, v in crossed_components(x).items()}
    components = {f"var_{k}": parts[k] for k in ("seeds", "images", "residual")}
    if not parts["var"] > TIES**2:  # no spread (or no positive estimate of it): no test
        return {**out, **nan, **components, "ci_lo": out["mean"], "ci_hi": out["mean"], "se": 0.0}
    se = float(np.sqrt(parts["var"]))
    half = float(stats.t.ppf((1 + level) / 2, parts["df"])) * se
    p = float(2 * stats.t.sf(abs(out["mean"]) / se, parts["df"]))
    return {**out, "ci_lo": out["mean"] - half, "ci_hi": out["mean"] + half, "p": p, "df": parts["df"], "se": se,
            **components}  # fmt: skip


def mcnemar(a: np.ndarray, b: np.ndarray) -> float:
    """McNemar's exact test of one seed's two regimes on the same test images: among the images exactly one of
    them classifies correctly, is A right as often as B? (a binomial test of the discordant pairs at 1/2)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def holm(p_values: np.ndarray | list[float]) -> np.ndarray:
    """Holm's step-down adjustment (family-wise error), statsmodels' `multipletests`. NaN stays NaN and is not
    counted in the family."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    valid = ~np.isnan(p)
    if valid.any():
        out[valid] = multipletests(p[valid], method="holm")[1]
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


def t_power(effect: float, df: float, alpha: float = 1 - LEVEL) -> float:
    """Power of a two-sided t-test at level `alpha` whose statistic is noncentral t with `df` degrees of freedom
    and noncentrality `effect` (the true difference over its standard error). Both tails from `nct.sf`: scipy's
    `nct.cdf` returns NaN at large noncentrality, `nct.sf(c, df, -nc)` is the same lower tail without it."""
    critical = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(critical, df, effect) + stats.nct.sf(critical, df, -effect))


MAX_SEEDS = 10_000


def _fewest(power_at, power: float) -> float:
    """The smallest n in 2..MAX_SEEDS with power_at(n) >= power (power rises with n), inf when none is."""
    if power_at(MAX_SEEDS) < power:
        return float("inf")
    low, high = 2, MAX_SEEDS
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if power_at(mid) >= power else (mid + 1, high)
    return float(low)


def seeds_for_power(mean_diff: float, sd_diff: float, power: float = 0.8, alpha: float = 1 - LEVEL) -> float:
    """How many seeds a two-sided paired t-test over seeds needs to detect a difference of `mean_diff` between
    regimes, when the per-seed differences spread with `sd_diff`, with probability `power` at level `alpha`.
    Exact, from the noncentral t; NaN when there is no spread or no difference to detect, inf beyond 10,000."""
    if not np.isfinite(mean_diff) or not np.isfinite(sd_diff) or sd_diff <= 0 or mean_diff == 0:
        return float("nan")
    effect = abs(mean_diff) / sd_diff
    return _fewest(lambda n: t_power(effect * np.sqrt(n), n - 1, alpha), power)


def crossed_power(
    mean_diff: float, seeds: float, images: float, residual: float, n_seeds: int, n_images: int,
    alpha: float = 1 - LEVEL,
) -> float:  # fmt: skip
    """Power of `crossed_test` with `n_seeds` seeds and `n_images` test images, when the true difference is
    `mean_diff` and the variance components are `seeds`, `images` and `residual` (as `crossed_test` estimates
    them): noncentral t at the degrees of freedom of the expected mean squares (an approximation, checked against
    simulated studies in tests/test_report_calibration.py)."""
    ms_s, ms_i, ms_e = residual + n_images * seeds, residual + n_seeds * images, residual
    var = (ms_s + ms_i - ms_e) / (n_seeds * n_images)
    if not var > 0:
        return float("nan")
    df = float(_satterthwaite(ms_s, ms_i, ms_e, n_seeds - 1, n_images, df_shrink(n_seeds, n_images, alpha)))
    return t_power(abs(mean_diff) / np.sqrt(var), df, alpha)


def seeds_for_crossed_power(
    mean_diff: float, seeds: float, images: float, residual: float, n_images: int, power: float = 0.8
) -> float:
    """The seeds `crossed_test` needs on the same number of test images for `power` at the observed difference and
    components: NaN without a difference, inf when even unlimited seeds fall short (the test images' share alone
    is too large: more test images would be needed, not more seeds)."""
    if not np.isfinite(mean_diff) or mean_diff == 0 or not all(np.isfinite([seeds, images, residual])):
        return float("nan")
    return _fewest(lambda n: crossed_power(mean_diff, seeds, images, residual, n, n_images), power)
