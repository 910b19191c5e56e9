"""The report's statistics against hand-computed values, scipy and statsmodels: the paired bootstrap over seeds and
test images, McNemar's test, Holm and Benjamini-Hochberg adjustments, the seeds needed for power, targets."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from harness.errors import HarnessError
from harness.report import stats, targets


def test_holm_and_benjamini_hochberg_of_known_p_values():
    p = [0.01, 0.04, 0.03, 0.005, np.nan]
    # Holm: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> monotone 0.02, 0.03, 0.06, 0.06
    assert stats.holm(p)[:4] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and np.isnan(stats.holm(p)[4])
    # BH: p * 4 / rank = 0.02, 0.02, 0.04, 0.04 (ranks 1-4), from the top down the running minimum
    assert stats.benjamini_hochberg(p)[:4] == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert stats.holm([0.9, 0.8])[0] == 1.0  # capped at 1


def test_mcnemar_is_the_exact_binomial_test_of_the_discordant_images():
    a = np.array([1] * 10 + [0] * 2 + [1] * 50 + [0] * 5)  # 10 only A right, 2 only B right, 55 concordant
    b = np.array([0] * 10 + [1] * 2 + [1] * 50 + [0] * 5)
    assert stats.mcnemar(a, b) == pytest.approx(2 * (1 + 12 + 66) / 4096)  # P(X <= 2) + P(X >= 10), X ~ B(12, 1/2)
    assert stats.mcnemar(a, a) == 1.0


def exact_bootstrap(diff: np.ndarray) -> np.ndarray:
    """Every resample of a tiny (seeds, images) table with its probability: the distribution the bootstrap
    samples from, enumerated."""
    n_s, n_i = diff.shape
    draws = itertools.product(itertools.product(range(n_s), repeat=n_s), itertools.product(range(n_i), repeat=n_i))
    return np.array([diff[np.ix_(s, i)].mean() for s, i in draws])  # each ordered draw equally likely


def test_the_bootstrap_resamples_seeds_and_images_together_and_pairs_the_regimes():
    a = np.array([[1, 1, 0], [1, 0, 1]])  # seeds x images, 0/1 correct
    b = np.array([[1, 0, 0], [0, 0, 1]])
    result = stats.paired_bootstrap(a, b, resamples=20_000, seed=1)
    exact = exact_bootstrap(a - b)
    assert result["mean"] == pytest.approx((a - b).mean())  # 2/6
    low, high = np.quantile(exact, [0.025, 0.975])
    assert result["ci_lo"] == pytest.approx(low, abs=1 / 6 + 1e-9) and result["ci_hi"] == pytest.approx(high, abs=1e-9)
    assert result["p"] == pytest.approx(2 * (exact <= 0).mean(), abs=0.02)  # the share of resamples at or below 0
    assert stats.paired_bootstrap(a, b, resamples=20_000, seed=1) == result  # the fixed seed: the same numbers


def test_a_difference_on_every_image_of_every_seed_is_certain_and_none_is_not():
    a, b = np.ones((3, 50)), np.zeros((3, 50))
    certain = stats.paired_bootstrap(a, b, resamples=999)
    assert (certain["ci_lo"], certain["ci_hi"], certain["p"]) == (1.0, 1.0, 2 / 1000)
    none = stats.paired_bootstrap(a, a, resamples=999)
    assert (none["mean"], none["ci_lo"], none["ci_hi"], none["p"]) == (0.0, 0.0, 0.0, 1.0)


def test_the_seeds_needed_for_80_percent_power_agree_with_statsmodels():
    from statsmodels.stats.power import TTestPower

    for mean, sd in ((0.004, 0.003), (0.01, 0.02), (0.05, 0.01)):
        needed = TTestPower().solve_power(effect_size=mean / sd, alpha=0.05, power=0.8, alternative="two-sided")
        assert stats.seeds_for_power(mean, sd) == np.ceil(needed)
    assert np.isnan(stats.seeds_for_power(0.01, 0.0)) and np.isnan(stats.seeds_for_power(0.0, 0.01))


def test_targets_are_parsed_judged_against_the_results_and_bad_ones_named():
    assert targets.parse("frozen", ">= 0.97") == ("frozen", None, ">=", 0.97)
    assert targets.parse("finetune_minus_frozen", "> 0") == ("finetune", "frozen", ">", 0.0)
    for name, text in (("frozen", "about 0.97"), ("frozn", ">= 0.9"), ("a_minus_b_minus_c", "> 0")):
        with pytest.raises(HarnessError, match="is not understood"):
            targets.parse(name, text)
    table = pd.DataFrame(
        {"backbone": ["m"], "frozen_n": [3], "frozen_test_acc_mean": [0.974], "frozen_test_acc_ci95_lo": [0.968],
         "frozen_test_acc_ci95_hi": [0.98]}
    )  # fmt: skip
    comparisons = pd.DataFrame(
        {"backbone": ["m"], "better": ["finetune"], "baseline": ["frozen"], "mean": [0.004], "ci_lo": [-0.001],
         "ci_hi": [0.009]}
    )  # fmt: skip
    judged = targets.judge({"frozen": ">= 0.97", "finetune_minus_frozen": "> 0"}, table, comparisons, ["backbone"])
    assert judged[["target", "met", "interval"]].values.tolist() == [
        ["frozen", True, False],  # the mean is above 0.97, the interval's low end is not
        ["finetune_minus_frozen", True, False],  # ahead on average, the interval crosses 0
    ]
