"""The report's transferability sections: the estimates beside the accuracies, and Kendall's tau between them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from harness.report import transfer
from harness.report.render import to_markdown


def table(n: int = 5) -> pd.DataFrame:
    """results.csv's columns for `n` boundaries: the cut's LogME ranks fine-tuning in order, k-NN in reverse."""
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "config": range(1, n + 1),
            "unfreeze_at": [f"block_{i}_expand" for i in range(n)],
            "frozen_n": 3,
            "finetune_n": 3,
            "frozen_test_acc_mean": 0.9 + rng.uniform(0, 0.01, n),
            "finetune_test_acc_mean": np.linspace(0.91, 0.97, n),
            "finetune_test_acc_std": 0.002,  # three seeds, a spread far below the gaps between boundaries
            "frozen_logme": [-0.5] * n,  # one top for every boundary: no ranking
            "frozen_knn_loo_acc": [0.93] * n,
            "finetune_logme": np.linspace(-0.9, -0.4, n),
            "finetune_knn_loo_acc": np.linspace(0.95, 0.85, n),
            "scratch_logme": np.nan,  # scratch trains on pixels: no estimate
        }
    )


def test_tau_is_scipys_kendall_tau_with_holm_adjusted_p_values():
    found = transfer.rank_agreement(table()).set_index(["estimate", "measured"])
    assert found.loc[("finetune_logme", "finetune"), "tau"] == pytest.approx(1.0)
    assert found.loc[("finetune_knn_loo_acc", "finetune"), "tau"] == pytest.approx(-1.0)
    t = table()
    expected = stats.kendalltau(t["finetune_logme"], t["frozen_test_acc_mean"])
    assert found.loc[("finetune_logme", "frozen"), "tau"] == pytest.approx(expected.statistic)
    assert ("frozen_logme", "finetune") not in found.index  # a constant estimate ranks nothing
    assert ("scratch_logme", "finetune") not in found.index
    valid = found["p"].dropna()
    assert (found.loc[valid.index, "p_holm"] >= valid).all() and found["p_holm"].max() <= 1


def test_the_report_shows_the_estimates_and_the_rank_agreement():
    md = to_markdown(transfer.sections(table(), ["unfreeze_at"]))
    assert "### Transferability estimates" in md and "### Do the estimates rank the configurations?" in md
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in md.splitlines() if line.startswith("| LogME")]
    assert ["LogME (fine-tuned, cut)", "fine-tuned test acc", "5", "+1.00"] in [r[:4] for r in rows]


def test_fewer_than_three_configurations_or_no_estimates_give_no_tau():
    assert transfer.rank_agreement(table(2)).empty
    assert transfer.sections(table().drop(columns=transfer.estimate_columns(table())), ["unfreeze_at"]) == []


def test_taus_interval_from_the_seeds_spread_narrows_with_it():
    """Means 1.5 points apart: seeds spread 0.2 points keep the order (tau near 1); spread 5 points, it is noise."""
    found = transfer.rank_agreement(table()).set_index(["estimate", "measured"])
    low, high = found.loc[("finetune_logme", "finetune"), ["tau_lo", "tau_hi"]]
    assert low >= 0.6 and high == pytest.approx(1.0)
    noisy = transfer.rank_agreement(table().assign(finetune_test_acc_std=0.05)).set_index(["estimate", "measured"])
    low, high = noisy.loc[("finetune_logme", "finetune"), ["tau_lo", "tau_hi"]]
    assert low < 0 < high
    assert np.isnan(found.loc[("finetune_logme", "frozen"), "tau_lo"])  # no spread recorded: no interval
    md = to_markdown(transfer.sections(table(), ["unfreeze_at"]))
    assert "tau 95% (seeds)" in md and f"[{found.loc[('finetune_logme', 'finetune'), 'tau_lo']:+.2f}, +1.00]" in md
