"""The summary table of a study (the wide results.csv): aggregation over seeds, the paired test, its keys."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.report import stats
from harness.report.runs import (
    CURVE_STATS,
    DIFF,
    NUMERIC_KEYS,
    REGIMES,
    STATS,
    finished_runs,
    row_keys,
)
from harness.training import backbones, specs

log = logging.getLogger("harness.report")

# How long each regime's runs trained: mean epochs run, and how many of them the early-stopping rule ended
RUN_LENGTH = ("epochs_run", "stopped_early")
ESTIMATES = ("logme", "knn_loo_acc")  # transferability estimates a run logged before training (report.transfer)
# The regime whose trained state later jobs reuse (the head phase): its train_time_s counts only the runs that
# trained it, and the last column says how many (frozen_head_phases_trained)
REUSED = next(spec for spec in specs.REGIMES.values() if spec.reuse is not None)
HEAD_TRAINED = f"{REUSED.name}_{REUSED.reuse.kind}_phases_trained"  # type: ignore[union-attr]
HEADLINE = specs.headline()  # the comparison a results.csv keeps as paired-t columns (DIFF)


# Keys that only some regimes use: when none of those regimes ran, a constant value is a config default
# that nothing used (epochs_scratch=30 in a study without scratch), and is not listed as the rows' setting.
def _key_regimes() -> dict[str, tuple[str, ...]]:
    """Each regime's phases (epochs_<phase>), learning rate and own settings, from the registry; a regime that starts
    from another also uses that one's phase and learning rate (fine-tuning follows the head phase), and one that
    unfreezes the backbone from a boundary uses unfreeze_at."""
    out: dict[str, set[str]] = {}
    for name, spec in specs.REGIMES.items():
        own_keys = {key: column for column, key in spec.columns.items()}  # a learning rate of its own node
        keys = [*spec.columns, own_keys.get(spec.lr_key, spec.lr_key), *(f"epochs_{phase}" for phase in spec.phases)]
        if spec.starts_from:  # it continues that regime's phase, trained at that regime's learning rate
            start = specs.spec(spec.starts_from)
            keys += [start.lr_key, *(f"epochs_{phase}" for phase in start.phases)]
        keys += ["unfreeze_at"] * spec.unfreezes
        for key in keys:
            out.setdefault(key, set()).add(name)
    return {key: tuple(sorted(regimes)) for key, regimes in out.items()}


KEY_REGIMES = _key_regimes()


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


def validation_at_tested_epoch(finished: pd.DataFrame, curves: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """The validation accuracy of the weights each run was tested with, and that epoch, per (configuration, regime).

    Counted the same way in every study: the epoch whose weights the stopping rule restored (metric best_epoch)
    when the rule was on, else the last epoch; epochs are the phase's own, from 1 (fine-tuning's from its
    start; 0 is the validation before the first epoch). Mean accuracy over seeds, median epoch.
    """
    group = [*keys, "regime"]
    trained = curves[curves["step"] >= 0]
    if trained.empty:
        return pd.DataFrame(columns=list(CURVE_STATS), index=pd.MultiIndex.from_tuples([], names=group))
    first, last = trained.groupby("run_id")["step"].min(), trained.groupby("run_id")["step"].max()
    runs = finished[["run_id", *group]].copy()
    best = pd.to_numeric(finished.get("best_epoch", pd.Series(np.nan, index=finished.index)), errors="coerce")
    restored = finished.get("restored", pd.Series(False, index=finished.index)).fillna(False).astype(bool)
    runs["tested"] = best.where(restored & best.notna(), runs["run_id"].map(last))
    value = trained.set_index(["run_id", "step"])["val_acc"]
    tested = zip(runs["run_id"], runs["tested"], strict=True)
    runs["val"] = [value.get((r, int(t)), np.nan) if pd.notna(t) else np.nan for r, t in tested]
    runs["epoch"] = runs["tested"] - runs["run_id"].map(first) + 1
    out = runs.groupby(group, sort=False).agg(tested_val_acc=("val", "mean"), tested_epoch=("epoch", "median"))
    out["tested_epoch"] = out["tested_epoch"].round()
    return out


def paired_differences(finished: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """The headline comparison's test_acc difference (`specs.headline`: fine-tuned minus frozen), paired
    by (configuration, seed): the baseline's run of the same job."""
    columns = [f"{DIFF}_{s}" for s in ("n", "mean", "std", "ci95_lo", "ci95_hi", "t", "p")]
    better, baseline = HEADLINE
    sides = finished[finished["regime"].isin([baseline, better])]
    wide = sides.set_index([*keys, "seed", "regime"])["test_acc"].unstack("regime")
    if wide.empty or not {baseline, better} <= set(wide.columns):
        return pd.DataFrame(columns=columns, index=pd.MultiIndex.from_tuples([], names=list(keys)))
    tests = wide.groupby(level=list(keys), sort=False).apply(
        lambda g: pd.Series(stats.paired_test(g[better], g[baseline]))
    )
    tests = tests.rename(columns={"ci_lo": "ci95_lo", "ci_hi": "ci95_hi"}).add_prefix(f"{DIFF}_")
    return tests[columns]


def summarize(
    runs: pd.DataFrame, curves: pd.DataFrame | None = None, intervals: pd.DataFrame | None = None
) -> pd.DataFrame:
    """One row per configuration, scratch / frozen / finetune side by side, aggregated over seeds.

    Per regime: n (finished runs = seeds), mean, std (ddof=1) and 95% interval of test_acc (the crossed seeds x
    images interval from `intervals`, `evidence.regime_intervals`, where the runs logged per-image predictions, with
    test_images the images it counted; else the Student-t interval over the seeds alone, test_images blank),
    best seed-mean val_acc and its epoch (needs `curves`, see `load_curves`), mean train_time_s, mean
    epochs run and how many runs the early-stopping rule ended (RUN_LENGTH), and the seeds. Then the paired
    fine-tuned - frozen difference (ttest_rel; NaN below two pairs). Only FINISHED runs count (see
    `finished_runs`); a configuration missing a regime has n = 0 and blanks there.

    frozen_train_time_s counts only the head phases these runs trained: a frozen run tagged
    head_phase=reused restored a cached head phase and records the time of the run that trained it
    (another job, maybe another study, maybe with the feature extraction included), so mixing it in would
    make the column neither this study's cost nor a per-seed cost. The last column, frozen_head_phases_trained,
    says how many runs that mean is over (NaN time when every head phase was reused).
    """
    finished = finished_runs(runs)
    keys = row_keys(finished)
    if finished.empty:
        return pd.DataFrame(columns=["config", *keys])
    group = [*keys, "regime"]
    tag = f"tags.{REUSED.reuse.kind}_phase"  # type: ignore[union-attr]
    head_phase = finished[tag] if tag in finished else pd.Series("", index=finished.index)
    reused = finished["regime"].eq(REUSED.name) & head_phase.eq("reused")
    per = finished.assign(_own_time=finished["train_time_s"].mask(reused), _trained=~reused)
    per = per.assign(**{e: np.nan for e in ESTIMATES if e not in per})  # runs recorded before the estimates
    per = per.groupby(group, sort=False).agg(
        n=("run_id", "size"),
        n_test=("test_acc", "count"),
        test_acc_mean=("test_acc", "mean"),
        test_acc_std=("test_acc", "std"),
        train_time_s=("_own_time", "mean"),
        trained=("_trained", "sum"),
        epochs_run=("epochs_run", "mean"),
        stopped_early=("stopped_early", "sum"),
        logme=("logme", "mean"),
        knn_loo_acc=("knn_loo_acc", "mean"),
        seeds=("seed", lambda s: ",".join(sorted(s, key=lambda v: (len(v), v)))),
    )
    half = stats.t_half_width(per["test_acc_std"], per["n_test"])
    per["test_acc_ci95_lo"] = per["test_acc_mean"] - half
    per["test_acc_ci95_hi"] = per["test_acc_mean"] + half
    per["test_images"] = np.nan
    if intervals is not None and not intervals.empty:
        per.update(intervals.reindex(per.index))  # the crossed interval where every seed has predictions
    tested = validation_at_tested_epoch(finished, curves, keys) if curves is not None else None
    per = per.join(tested) if tested is not None else per.assign(tested_val_acc=np.nan, tested_epoch=np.nan)
    regime_stats = [*STATS, "test_images", *CURVE_STATS, "train_time_s", *RUN_LENGTH, *ESTIMATES, "seeds"]
    wide = per[regime_stats].unstack("regime")
    wide = wide.reindex(columns=pd.MultiIndex.from_product([regime_stats, REGIMES]))
    wide = wide.swaplevel(axis=1).reindex(columns=pd.MultiIndex.from_product([REGIMES, regime_stats]))
    wide.columns = [f"{regime}_{stat}" for regime, stat in wide.columns]
    for regime in REGIMES:
        wide[f"{regime}_n"] = wide[f"{regime}_n"].fillna(0).astype(int)
        wide[f"{regime}_tested_epoch"] = wide[f"{regime}_tested_epoch"].astype("Int64")
        wide[f"{regime}_stopped_early"] = wide[f"{regime}_stopped_early"].astype("Int64")
    table = wide.join(paired_differences(finished, keys))
    table[f"{DIFF}_n"] = table[f"{DIFF}_n"].fillna(0).astype(int)
    trained = per["trained"].unstack("regime").reindex(index=table.index, columns=REGIMES)[REUSED.name]
    table[HEAD_TRAINED] = trained.fillna(0).astype(int)
    table = _sorted_rows(table.reset_index(), keys)
    table.insert(0, "config", range(1, len(table) + 1))
    return table


# ------------------------------------------------------------------------------------------------- keys


def row_keys_of(table: pd.DataFrame) -> list[str]:
    """The configuration columns of a `summarize` table (between `config` and the first regime column)."""
    cols = list(table.columns)
    return cols[1 : cols.index(f"{REGIMES[0]}_n")]


def regimes_run(table: pd.DataFrame) -> list[str]:
    """The regimes with at least one finished run in the table."""
    return [r for r in REGIMES if table[f"{r}_n"].any()]


def used_key(key: str, ran: Sequence[str]) -> bool:
    """Whether a configuration key means anything for the regimes that ran (see KEY_REGIMES)."""
    return any(r in ran for r in KEY_REGIMES.get(key, REGIMES))


def decided_by_budget(budget: str) -> set[str]:
    """The epochs keys that a step budget ("steps head 630, finetune 126") overrode: they decided nothing, and
    the table's epochs run says what each phase ran."""
    return {f"epochs_{phase}" for phase in re.findall(r"(\w+) \d+", budget)}


def shown(key: str, value: object) -> bool:
    """Whether a key's value says something: not blank (a key no run logged)."""
    return str(value) not in ("", "None", "nan")


def split_keys(table: pd.DataFrame) -> tuple[list[str], dict[str, str]]:
    """(keys that vary between rows, {constant key: value}) - constants only where a regime that ran uses them."""
    keys = row_keys_of(table)
    varying = [k for k in keys if table[k].astype(str).nunique() > 1]
    ran = regimes_run(table)
    used = [k for k in varying if used_key(k, ran)]  # epochs_head of a scratch-only study: it decided nothing ...
    if used and not table[used].astype(str).duplicated().any():  # ... unless it alone tells two rows apart
        varying = used
    constant = {
        k: str(table[k].iloc[0])
        for k in keys
        if k not in varying and len(table) and used_key(k, ran) and shown(k, table[k].iloc[0])
    }
    for key in decided_by_budget(constant.get("budget", "")):
        constant.pop(key, None)
    for spec in specs.REGIMES.values():  # keys a regime's own settings made meaningless (no BatchNorm to set)
        for key in spec.unused_keys(constant, ran) if spec.unused_keys else ():
            constant.pop(key, None)
    return varying, constant


def read_table(path: Path | str) -> pd.DataFrame:
    """A results.csv back as `summarize` returned it: keys as the strings the runs logged, counts as ints.

    So a report can be re-rendered from the recorded numbers when the MLflow store is gone.
    """
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"from_csv={str(path)!r}: no such file")
    columns = list(pd.read_csv(path, nrows=0).columns)
    if not columns or columns[0] != "config" or f"{REGIMES[0]}_n" not in columns:
        raise HarnessError(f"from_csv={str(path)!r} is not a report's results.csv (no config, ..., scratch_n columns)")
    keys = columns[1 : columns.index(f"{REGIMES[0]}_n")]
    text = {c: str for c in [*keys, *(f"{r}_seeds" for r in REGIMES)]}
    table = pd.read_csv(path, dtype=text, keep_default_na=False, na_values={c: [""] for c in columns if c not in text})
    first = REGIMES[0]
    after_keys = list(table.columns)[len(keys) + 1 :]
    stats_of = [c.removeprefix(f"{first}_") for c in after_keys if c.startswith(f"{first}_")]
    for regime in REGIMES:  # a regime added to the registry after the report was written: none of its runs
        if f"{regime}_n" not in table:
            absent = {f"{regime}_{stat}": np.nan for stat in stats_of}
            table = table.assign(**{**absent, f"{regime}_n": 0, f"{regime}_seeds": ""})
    for regime in REGIMES:
        for stat in ("best_val_epoch", "stopped_early"):
            if f"{regime}_{stat}" in table:  # a results.csv of an older report may lack the run lengths
                table[f"{regime}_{stat}"] = table[f"{regime}_{stat}"].astype("Int64")
    return table
