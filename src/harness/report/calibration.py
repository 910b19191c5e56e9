"""Simulated studies with a known truth, to check that the report's intervals and p-values mean what they say.

A study here has S seeds and I test images, and the test images are shared by every seed and both regimes, as in
a real record. Each image has a difficulty (a logit, hard images stay hard for every seed and regime); each
regime has its own bent on each image (regimes err on partly different images); each seed shifts a regime's
logits so that its expected accuracy moves by a normal amount (training randomness: a seed is a few points
better or worse on the whole task); and the two regimes of one seed share the uniform draw that decides each
outcome, so a job's two regimes err together more often than independent runs would. Under the null the two
regimes are exchangeable, so the true difference is 0; a single regime's true accuracy is the setting's, its
mean over new images and new seeds.

A setting fixes the seeds, the mean accuracy and the seeds' share of the variance of the mean (`seed_share`),
which is what decides whether a test that looks at the seeds alone, or at the images alone, goes wrong. The
seeds' spread of accuracy is solved for that share (`Setting.spread`) on a large sample of images and seeds.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special
from scipy import stats as distributions

from harness.report import stats

DIFFICULTY = 1.5  # sd of the images' logits: at 75% accuracy one image in six is right less than half the time
BENT = 0.5  # sd of a regime's own logit offset per image
KINDS = ("difference", "single")  # a comparison of two regimes, or one regime's accuracy
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(80)  # E[f(Z)], Z ~ N(0, 1), by Gauss-Hermite quadrature


def _normal_mean(f: Callable[[np.ndarray], np.ndarray]) -> float:
    return float((_WEIGHTS * f(_NODES)).sum() / _WEIGHTS.sum())


@functools.cache
def _location(accuracy: float) -> float:
    """The mean logit at which the images' (and regimes') spread of difficulty gives `accuracy`."""
    return optimize.brentq(lambda mu: _expected(mu) - accuracy, -12, 12)


def _expected(location: float) -> float:
    """The accuracy over the population of images (and bents) at a mean logit."""
    scale = np.hypot(DIFFICULTY, BENT)
    return _normal_mean(lambda z: special.expit(np.add.outer(location, scale * z)))


_GRID = np.linspace(-12, 12, 2001)


@functools.cache
def _accuracy_curve() -> np.ndarray:
    return np.array([_expected(x) for x in _GRID])


def logit_shift(setting: Setting, accuracy_shift: np.ndarray) -> np.ndarray:
    """The logit offsets that move the population accuracy by `accuracy_shift` (the curve is increasing)."""
    target = np.clip(setting.accuracy + accuracy_shift, 1e-4, 1 - 1e-4)
    return np.interp(target, _accuracy_curve(), _GRID) - setting.location


@dataclass(frozen=True)
class Setting:
    kind: str  # "difference" or "single"
    seeds: int
    accuracy: float
    seed_share: float
    images: int = 1000
    effect: float = 0.0  # the first regime's true accuracy minus the second's (a difference; 0: the null)

    @property
    def location(self) -> float:
        return _location(self.accuracy)

    def truth(self) -> float:
        """The estimand: 0 for a difference under the null, the population accuracy of a single regime."""
        return self.effect if self.kind == "difference" else self.accuracy

    @functools.cached_property
    def spread(self) -> float:
        """The sd of the seeds' accuracy shifts that gives this setting's seed share."""
        oracle = _Oracle(self)
        return float(np.exp(optimize.brentq(lambda s: oracle.share(np.exp(s)) - self.seed_share, -12, -1, xtol=1e-4)))

    def share(self) -> float:
        """The seeds' share of the variance of the mean at `spread`, as the large sample gives it."""
        return _Oracle(self).share(self.spread)


class _Oracle:
    """Variance components of the expected outcome on a large fixed sample (the same draws at every spread, so the
    share is smooth in it and the root-finding converges)."""

    def __init__(self, setting: Setting, seeds: int = 200, images: int = 4000) -> None:
        rng = np.random.default_rng(7)
        self.setting = setting
        self.logit = setting.location + DIFFICULTY * rng.standard_normal(images)
        self.bent = BENT * rng.standard_normal((2, images))
        self.shift = rng.standard_normal((2, seeds, 1))

    def share(self, spread: float) -> float:
        shift = logit_shift(self.setting, spread * self.shift)
        p = special.expit(self.logit + self.bent[:, None, :] + shift)  # (regime, seed, image)
        if self.setting.kind == "difference":
            expected, noise = p[0] - p[1], np.abs(p[0] - p[1]) - (p[0] - p[1]) ** 2  # the shared draw
        else:
            expected, noise = p[0], p[0] * (1 - p[0])
        by_seed, by_image = expected.mean(axis=1), expected.mean(axis=0)
        interaction = expected - by_seed[:, None] - by_image[None, :] + expected.mean()
        s, n = self.setting.seeds, self.setting.images
        seeds, images, residual = by_seed.var(), by_image.var(), noise.mean() + interaction.var()
        return seeds / s / (seeds / s + images / n + residual / (s * n))


def replicates(setting: Setting, count: int, seed: int = 0, chunk: int = 100) -> Iterator[np.ndarray]:
    """Simulated (replicates, seeds, images) tables, `chunk` at a time: 0/1 outcomes of one regime, or the
    difference of two regimes' outcomes, each replicate with new images, new bents and new seeds."""
    rng = np.random.default_rng(seed)
    s, n, spread = setting.seeds, setting.images, setting.spread
    for start in range(0, count, chunk):
        r = min(chunk, count - start)
        logit = setting.location + DIFFICULTY * rng.standard_normal((r, 1, n))
        draw = rng.random((r, s, n))  # one per seed and image, shared by both regimes of that seed
        outcome = []
        for regime in range(2 if setting.kind == "difference" else 1):
            moved = spread * rng.standard_normal((r, s, 1)) + (setting.effect if regime == 0 else 0.0)
            outcome.append(
                draw < special.expit(logit + BENT * rng.standard_normal((r, 1, n)) + logit_shift(setting, moved))
            )
        yield outcome[0].astype(float) - outcome[1] if setting.kind == "difference" else outcome[0].astype(float)


def crossed_tests(x: np.ndarray, level: float = stats.LEVEL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`stats.crossed_test` over a stack of tables at once: (mean, interval low, interval high)."""
    parts = stats.crossed_components(x)
    half = distributions.t.ppf((1 + level) / 2, parts["df"]) * np.sqrt(parts["var"])
    return parts["mean"], parts["mean"] - half, parts["mean"] + half


def rejections(setting: Setting, count: int, seed: int = 0) -> tuple[float, dict[str, np.ndarray]]:
    """The share of `count` simulated studies in which `crossed_tests` rejects "no difference" at 5%, and the mean
    variance components it estimated over them (what a power calculation would be given)."""
    rejected, parts = 0, []
    for tables in replicates(setting, count, seed):
        _, low, high = crossed_tests(tables)
        rejected += int(((low > 0) | (high < 0)).sum())
        parts.append(stats.crossed_components(tables))
    return rejected / count, {k: np.concatenate([p[k] for p in parts]).mean() for k in ("seeds", "images", "residual")}


def former_bootstrap(x: np.ndarray, resamples: int = 10_000, level: float = stats.LEVEL, seed: int = 20261129):
    """The report's comparison until December 2026, kept to show why it was replaced: a percentile bootstrap that
    resamples seeds and images together (each (seeds, images) table of a stack). With 3 seeds there are only 10
    distinct seed resamples, the seeds' variance comes out 2/3 of its value and the tails are normal where 2 degrees
    of freedom call for far wider ones: it rejects 13% of true nulls at a nominal 5% when the seeds dominate, and
    0.3-1.7% when the test images do (benchmarks/RESULTS.md)."""
    tables = np.asarray(x, dtype=float).reshape(-1, *np.shape(x)[-2:])
    rng = np.random.default_rng(seed)
    means, lows, highs = [], [], []
    for table in tables:
        n_s, n_i = table.shape
        seed_counts = rng.multinomial(n_s, np.full(n_s, 1 / n_s), size=resamples)
        drawn = rng.integers(0, n_i, size=(resamples, n_i)) + n_i * np.arange(resamples)[:, None]
        image_counts = np.bincount(drawn.ravel(), minlength=resamples * n_i).reshape(resamples, n_i)  # multinomial
        resampled = ((seed_counts @ table) * image_counts).sum(axis=1) / (n_s * n_i)
        low, high = np.quantile(resampled, [(1 - level) / 2, (1 + level) / 2])
        means.append(table.mean())
        lows.append(low)
        highs.append(high)
    return np.array(means), np.array(lows), np.array(highs)


def seeds_t_tests(x: np.ndarray, level: float = stats.LEVEL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Student-t interval over the seeds' means alone (the paired t-test for a difference): what the report
    used for single regimes and for runs without per-image predictions."""
    per_seed = x.mean(axis=-1)
    mean, n = per_seed.mean(axis=-1), per_seed.shape[-1]
    half = distributions.t.ppf((1 + level) / 2, n - 1) * per_seed.std(axis=-1, ddof=1) / np.sqrt(n)
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class Calibration:
    setting: Setting
    replicates: int
    rejected: float  # share of replicates whose interval leaves out the truth (for a difference: p < 5% under the null)
    covered: float  # share of replicates whose interval holds the truth

    @property
    def fine(self) -> bool:
        return 0.03 <= self.rejected <= 0.07 and 0.92 <= self.covered <= 0.98


def calibrate(setting: Setting, count: int, method=crossed_tests, seed: int = 0) -> Calibration:
    """How often `method`'s 95% interval holds the truth over `count` simulated studies of `setting`."""
    truth, held = setting.truth(), 0
    for tables in replicates(setting, count, seed):
        _, low, high = method(tables)
        held += int(((low <= truth) & (truth <= high)).sum())
    covered = held / count
    return Calibration(setting, count, 1 - covered, covered)


def settings(seeds=(3, 5, 10), accuracies=(0.75, 0.95), shares=(0.1, 0.5, 0.9), kinds=KINDS) -> list[Setting]:
    """Every combination: what the report's intervals must hold at."""
    return [Setting(k, s, a, f) for k in kinds for s in seeds for a in accuracies for f in shares]
