"""Per-image evidence: each regime run's test predictions (`predictions/test.csv`), read back and compared.

A regime's test accuracy is the mean of its images' 0/1 outcomes, so its interval can count both the seeds and the
test images (`stats.crossed_test` on the seeds x images table), and two regimes of one configuration can be
compared on the same images, seed by seed, with the same test on their differences; McNemar's test per seed beside
it (descriptive), and, for runs recorded before the predictions were logged, the paired t-test of the seeds'
accuracies. The same test compares two values of one
config key (`compare=augment`: with and without augmentation), regime by regime, when the runs share their test
images. Every comparison the report makes is one family for the multiple-comparison adjustment. Per-class
accuracy and a confusion matrix come from the same predictions (a user's data may be unbalanced).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
from pandas.api.types import union_categoricals

from harness import tracking
from harness.report import stats
from harness.report.runs import REGIME_LABELS
from harness.training import specs

log = logging.getLogger("harness.report")

# The comparisons a report makes, where both regimes ran: (better-expected, baseline), from the registry
PAIRS = tuple(specs.pairs())
CROSSED = stats.CROSSED
BOOTSTRAP = "paired bootstrap (seeds x images)"  # what reports recorded before December 2026 name their test
PAIRED_T = "paired t (seeds)"


def load_predictions(finished: pd.DataFrame) -> pd.DataFrame:
    """Every regime run's per-image predictions, long: run_id, file, label, predicted, correct (runs without the
    artifact, recorded before it existed, are absent).

    Read one run at a time and kept compact: names as categories (one copy of each file name, not one per run),
    correctness as booleans, so a study of 100 runs on 25,000 test images holds about 30 MB rather than the
    strings of every row (about 0.5 GB). Groupings over these columns pass `observed=True`.
    """
    frames = []
    for run_id in finished["run_id"]:
        table = tracking.load_table(run_id, tracking.PREDICTIONS)
        if table is not None:
            one = table[["file", "label", "predicted"]].astype(str).astype("category")
            frames.append(one.assign(correct=table["correct"].astype(bool), run_id=run_id))
    if not frames:
        return pd.DataFrame(columns=["run_id", "file", "label", "predicted", "correct"])
    stacked = {column: union_categoricals([f[column] for f in frames]) for column in ("file", "label", "predicted")}
    stacked["run_id"] = union_categoricals([f["run_id"].astype("category") for f in frames])
    correct = np.concatenate([f["correct"].to_numpy() for f in frames])
    return pd.DataFrame({**stacked, "correct": correct})


def _correctness(runs: pd.DataFrame, predictions: pd.DataFrame, seeds: Sequence[str]) -> pd.DataFrame | None:
    """(images, seeds) 0/1 frame of one regime indexed by file; None unless every seed has predictions."""
    rows = []
    for seed in seeds:
        run_id = runs.loc[runs["seed"] == seed, "run_id"]
        if run_id.empty:
            return None
        one = predictions[predictions["run_id"] == run_id.iloc[0]]
        if one.empty:
            return None
        rows.append(pd.Series(one["correct"].to_numpy(), index=one["file"].astype(str).to_numpy(), name=seed))
    return pd.concat(rows, axis=1, join="inner").sort_index()  # the images every seed was tested on


def _compare(a: pd.DataFrame, b: pd.DataFrame, predictions: pd.DataFrame) -> dict[str, object] | None:
    """The paired comparison of two sets of runs (one per seed each), seed by seed: the crossed seeds x images test
    of their differences when both have predictions on the same test images, else the paired t-test of the seeds'
    accuracies; the seeds each would need for 80% power; None when no seed ran on both sides."""
    seeds = sorted(set(a["seed"]) & set(b["seed"]), key=lambda s: (len(s), s))
    if not seeds:
        return None
    acc_a, acc_b = a.set_index("seed").loc[seeds, "test_acc"], b.set_index("seed").loc[seeds, "test_acc"]
    row: dict[str, object] = {"seeds": ",".join(seeds)}
    ca, cb = _correctness(a, predictions, seeds), _correctness(b, predictions, seeds)
    per_seed = acc_a - acc_b
    row["sd_seeds"] = float(per_seed.std(ddof=1)) if len(seeds) >= 2 else np.nan
    if ca is not None and cb is not None and ca.index.equals(cb.index):
        x, y = ca.to_numpy(dtype=float).T, cb.to_numpy(dtype=float).T
        tested = stats.crossed_test(x - y)
        row.update({k: tested[k] for k in ("n", "images", "mean", "ci_lo", "ci_hi", "p", "df")}, method=CROSSED)
        row["mcnemar_p"] = ",".join(f"{stats.mcnemar(u, v):.3g}" for u, v in zip(x, y, strict=True))
        row["seeds_for_80pct_power"] = stats.seeds_for_crossed_power(
            tested["mean"], tested["var_seeds"], tested["var_images"], tested["var_residual"], n_images=x.shape[1]
        )
    else:  # no predictions (recorded before they were logged), or other test images: the seeds' accuracies
        test = stats.paired_test(acc_a, acc_b)
        row.update({k: test[k] for k in ("n", "mean", "ci_lo", "ci_hi", "p")}, method=PAIRED_T, images=np.nan)
        row.update(df=len(seeds) - 1, mcnemar_p="")
        row["seeds_for_80pct_power"] = stats.seeds_for_power(float(row["mean"]), row["sd_seeds"])  # type: ignore[arg-type]
    return row


TESTED = ["seeds", "n", "images", "mean", "ci_lo", "ci_hi", "p", "df", "method", "mcnemar_p", "sd_seeds",
          "seeds_for_80pct_power"]  # fmt: skip


def comparisons(finished: pd.DataFrame, predictions: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """One row per configuration and pair of regimes that both ran: the paired difference of test accuracy, its
    95% interval and p-value (the crossed test when the runs have predictions, else the paired t-test), McNemar's
    p per seed, and the seeds that test would need for 80% power at the observed difference and variance
    (`adjust` adds the p-value adjusted over the whole report)."""
    rows = []
    for values, config in finished.groupby(list(keys), sort=False, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        for better, baseline in PAIRS:
            tested = _compare(config[config["regime"] == better], config[config["regime"] == baseline], predictions)
            if tested is not None:
                label = f"{REGIME_LABELS[better]} − {REGIME_LABELS[baseline]}"
                rows.append({**dict(zip(keys, values, strict=True)), "comparison": label, "better": better,
                             "baseline": baseline, **tested})  # fmt: skip
    return pd.DataFrame(rows, columns=[*keys, "comparison", "better", "baseline", *TESTED])


def key_comparisons(
    finished: pd.DataFrame, predictions: pd.DataFrame, keys: Sequence[str], key: str, baseline: str
) -> pd.DataFrame:
    """Each other value of `key` against `baseline`, within each regime and configuration of the other keys,
    paired by seed (and by test image where the runs share them). `better` and `baseline` hold the key's values;
    the key's own column holds the value compared with the baseline. A key that changed only together with `key`
    (each value of `key` ran with one value of it: Chollet's two models differ in augmentation, batch size and
    epochs) does not separate the pairs: its column says "<value> − <baseline's value>", `also_differs` names it."""
    others = [k for k in keys if k != key]
    along = [k for k in others if changes_only_with(finished, key, k)]
    grouping = [k for k in others if k not in along]
    value_of = {k: finished.groupby(finished[key].astype(str))[k].first().astype(str) for k in along}
    rows = []
    groups = finished.groupby(grouping, sort=False, dropna=False) if grouping else [((), finished)]
    for values, config in groups:
        values = values if isinstance(values, tuple) else (values,)
        for regime in [r for r in specs.NAMES if r in set(config["regime"])]:
            mine = config[config["regime"] == regime]
            base = mine[mine[key].astype(str) == baseline]
            for value in [v for v in dict.fromkeys(mine[key].astype(str)) if v != baseline]:
                tested = _compare(mine[mine[key].astype(str) == value], base, predictions)
                if tested is not None:
                    moved = {k: f"{value_of[k][value]} − {value_of[k][baseline]}" for k in along}
                    rows.append({**dict(zip(grouping, values, strict=True)), **moved, key: value, "regime": regime,
                                 "comparison": f"{key} {value} − {baseline}", "better": value, "baseline": baseline,
                                 **tested, "also_differs": ", ".join(along)})  # fmt: skip
    columns = [*others, key, "regime", "comparison", "better", "baseline", *TESTED, "also_differs"]
    return pd.DataFrame(rows, columns=columns)


def regime_intervals(finished: pd.DataFrame, predictions: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Each configuration and regime whose every seed has per-image predictions on the same test images: the
    crossed seeds x images interval of its test accuracy (the seeds' spread and the test set's sampling together),
    indexed like `tables.summarize`'s per-regime frame; configurations without predictions are absent."""
    rows = []
    for values, runs in finished.groupby([*keys, "regime"], sort=False, dropna=False):
        seeds = sorted(set(runs["seed"]), key=lambda s: (len(s), s))
        table = _correctness(runs, predictions, seeds)
        if table is None or len(seeds) < 2:
            continue
        tested = stats.crossed_test(table.to_numpy(dtype=float).T)
        rows.append((*values, tested["ci_lo"], tested["ci_hi"], tested["images"]))
    columns = ["test_acc_ci95_lo", "test_acc_ci95_hi", "test_images"]
    return pd.DataFrame(rows, columns=[*keys, "regime", *columns]).set_index([*keys, "regime"])


def changes_only_with(finished: pd.DataFrame, key: str, other: str) -> bool:
    """Whether `other` varies in these runs only as `key` does: one value of `other` for each value of `key`."""
    pairs = finished[[key, other]].astype(str).drop_duplicates()
    return pairs[other].nunique() > 1 and pairs[key].is_unique


def adjust_together(frames: Sequence[pd.DataFrame], adjust: str) -> None:
    """Add `p_<adjust>` to each frame: the p-values adjusted as one family over all of them (in place)."""
    p = np.concatenate([f["p"].to_numpy(dtype=float) for f in frames]) if frames else np.array([])
    adjusted = stats.ADJUSTMENTS[adjust](p) if len(p) else p
    start = 0
    for frame in frames:
        frame[f"p_{adjust}"] = adjusted[start : start + len(frame)]
        start += len(frame)


def per_class(finished: pd.DataFrame, predictions: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Test accuracy of each class, per configuration and regime: mean over seeds (each seed's accuracy on the
    images of that class), the images per class, and the class each class is most often mistaken for."""
    if predictions.empty:
        return pd.DataFrame(columns=[*keys, "regime", "class", "images", "acc_mean", "acc_min_seed"])
    per_run = predictions.groupby(["run_id", "label"], sort=False, observed=True)["correct"].agg(["sum", "size"])
    per_run = per_run.reset_index().astype({"run_id": str, "label": str})  # a few rows per run: plain columns
    merged = per_run.merge(finished[["run_id", "regime", "seed", *keys]], on="run_id")
    per_seed = merged.groupby([*keys, "regime", "label", "seed"], sort=False)[["sum", "size"]].sum()
    per_seed["mean"] = per_seed["sum"] / per_seed["size"]
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
    per_run = predictions.groupby(["run_id", "label", "predicted"], sort=False, observed=True).size().rename("count")
    per_run = per_run.reset_index().astype({"run_id": str, "label": str, "predicted": str})
    merged = per_run.merge(finished[["run_id", "regime", *keys]], on="run_id")
    counts = merged.groupby([*keys, "regime", "label", "predicted"], sort=False)["count"].sum()
    return counts.reset_index().rename(columns={"label": "true"})
