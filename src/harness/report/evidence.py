"""Per-image evidence: each regime run's test predictions (`predictions/test.csv`), read back and compared.

A regime's test accuracy is the mean of its images' 0/1 outcomes, so two regimes of one configuration can be
compared on the same images, seed by seed: the paired bootstrap over seeds and images (`stats.paired_bootstrap`)
for the interval and p-value, McNemar's test per seed beside it (descriptive), and, for runs recorded before the
predictions were logged, the paired t-test of the seeds' accuracies. Every comparison the report makes is one
family for the multiple-comparison adjustment. Per-class accuracy and a confusion matrix come from the same
predictions (a user's data may be unbalanced).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from harness import tracking
from harness.report import stats
from harness.report.runs import REGIME_LABELS
from harness.training import specs

log = logging.getLogger("harness.report")

# The comparisons a report makes, where both regimes ran: (better-expected, baseline)
PAIRS = (("finetune", "frozen"), ("frozen", "scratch"), ("finetune", "scratch"))
BOOTSTRAP = "paired bootstrap (seeds x images)"
PAIRED_T = "paired t (seeds)"


def load_predictions(finished: pd.DataFrame) -> pd.DataFrame:
    """Every regime run's per-image predictions, long: run_id, file, label, predicted, correct (runs without the
    artifact, recorded before it existed, are absent)."""
    frames = []
    for run_id in finished["run_id"]:
        table = tracking.load_table(run_id, tracking.PREDICTIONS)
        if table is not None:
            frames.append(table[["file", "label", "predicted", "correct"]].assign(run_id=run_id))
    if not frames:
        return pd.DataFrame(columns=["run_id", "file", "label", "predicted", "correct"])
    return pd.concat(frames, ignore_index=True)


def _correctness(runs: pd.DataFrame, predictions: pd.DataFrame, seeds: Sequence[str]) -> np.ndarray | None:
    """(seeds, images) 0/1 matrix of one regime, images in file order; None unless every seed has predictions."""
    rows = []
    for seed in seeds:
        run_id = runs.loc[runs["seed"] == seed, "run_id"]
        if run_id.empty:
            return None
        one = predictions[predictions["run_id"] == run_id.iloc[0]].sort_values("file")
        if one.empty:
            return None
        rows.append(one.set_index("file")["correct"])
    frame = pd.concat(rows, axis=1, join="inner")  # the images every seed was tested on (the same split)
    return frame.to_numpy(dtype=float).T


def comparisons(
    finished: pd.DataFrame, predictions: pd.DataFrame, keys: Sequence[str], adjust: str = "holm"
) -> pd.DataFrame:
    """One row per configuration and pair of regimes that both ran: the paired difference of test accuracy, its
    95% interval and p-value (bootstrap when the runs have predictions, else the paired t-test), McNemar's
    p per seed, the p-value adjusted over the whole report (`adjust`: holm or bh), and the seeds a paired t-test
    would need for 80% power at the observed difference and spread."""
    rows = []
    for values, config in finished.groupby(list(keys), sort=False, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        for better, baseline in PAIRS:
            a, b = config[config["regime"] == better], config[config["regime"] == baseline]
            seeds = sorted(set(a["seed"]) & set(b["seed"]), key=lambda s: (len(s), s))
            if not seeds:
                continue
            acc_a, acc_b = a.set_index("seed").loc[seeds, "test_acc"], b.set_index("seed").loc[seeds, "test_acc"]
            per_seed = acc_a - acc_b
            row = dict(zip(keys, values, strict=True))
            row.update(comparison=f"{REGIME_LABELS[better]} − {REGIME_LABELS[baseline]}", better=better)
            row.update(baseline=baseline, seeds=",".join(seeds))
            ca, cb = _correctness(a, predictions, seeds), _correctness(b, predictions, seeds)
            if ca is not None and cb is not None and ca.shape == cb.shape:
                row.update(stats.paired_bootstrap(ca, cb), method=BOOTSTRAP, images=ca.shape[1])
                row["mcnemar_p"] = ",".join(f"{stats.mcnemar(x, y):.3g}" for x, y in zip(ca, cb, strict=True))
            else:
                test = stats.paired_test(acc_a, acc_b)
                row.update({k: test[k] for k in ("n", "mean", "ci_lo", "ci_hi", "p")}, method=PAIRED_T, images=np.nan)
                row["mcnemar_p"] = ""
            row["sd_seeds"] = float(per_seed.std(ddof=1)) if len(seeds) >= 2 else np.nan
            row["seeds_for_80pct_power"] = stats.seeds_for_power(row["mean"], row["sd_seeds"])
            rows.append(row)
    columns = [*keys, "comparison", "better", "baseline", "seeds", "n", "images", "mean", "ci_lo", "ci_hi", "p",
               "method", "mcnemar_p", "sd_seeds", "seeds_for_80pct_power"]  # fmt: skip
    table = pd.DataFrame(rows, columns=columns)
    table[f"p_{adjust}"] = stats.ADJUSTMENTS[adjust](table["p"].to_numpy(dtype=float)) if len(table) else []
    return table


def per_class(finished: pd.DataFrame, predictions: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Test accuracy of each class, per configuration and regime: mean over seeds (each seed's accuracy on the
    images of that class), the images per class, and the class each class is most often mistaken for."""
    if predictions.empty:
        return pd.DataFrame(columns=[*keys, "regime", "class", "images", "acc_mean", "acc_min_seed"])
    merged = predictions.merge(finished[["run_id", "regime", "seed", *keys]], on="run_id")
    per_seed = merged.groupby([*keys, "regime", "label", "seed"], sort=False)["correct"].agg(["mean", "size"])
    out = per_seed.groupby(level=[*range(len(keys)), len(keys), len(keys) + 1], sort=False).agg(
        acc_mean=("mean", "mean"), acc_min_seed=("mean", "min"), images=("size", "first")
    )
    out = out.reset_index().rename(columns={"label": "class"})
    order = {name: i for i, name in enumerate(specs.NAMES)}
    out = out.sort_values("regime", key=lambda s: s.map(order), kind="stable")
    return out[[*keys, "regime", "class", "images", "acc_mean", "acc_min_seed"]].reset_index(drop=True)


def confusion(finished: pd.DataFrame, predictions: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Confusion counts per configuration and regime, summed over seeds: true class x predicted class."""
    if predictions.empty:
        return pd.DataFrame(columns=[*keys, "regime", "true", "predicted", "count"])
    merged = predictions.merge(finished[["run_id", "regime", *keys]], on="run_id")
    counts = merged.groupby([*keys, "regime", "label", "predicted"], sort=False).size().rename("count")
    return counts.reset_index().rename(columns={"label": "true"})
