"""What a report says beyond the per-regime summary: the comparisons between regimes (and between the values of
one key, `compare=`), the targets judged, per-class accuracy and the confusion counts; computed from the store, or
read back from a report's CSV files.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness import record_version
from harness.errors import HarnessError
from harness.report import evidence, targets, transfer
from harness.report.render import (
    Section,
    comparisons_section,
    key_comparisons_section,
    key_value,
    per_class_section,
    results_section,
    targets_section,
)
from harness.report.runs import DIFF, REGIME_LABELS
from harness.report.tables import HEADLINE, row_keys_of, split_keys

log = logging.getLogger("harness.report")

FILES = {
    "comparisons": "comparisons.csv",
    "by_key": "comparisons_by_key.csv",
    "per_class": "per_class.csv",
    "confusion": "confusion.csv",
}
# Every regime run's outcome on every test image, so that a later analysis needs no MLflow store (gzip without a
# timestamp: the same report writes the same bytes)
CORRECTNESS = "correctness.csv.gz"
_GZIP = {"method": "gzip", "mtime": 0}


@dataclass
class Analysis:
    """The report's tables beyond the summary (empty frames where there is nothing to show)."""

    comparisons: pd.DataFrame
    by_key: pd.DataFrame = field(default_factory=pd.DataFrame)  # compare=<key>: its values, regime by regime
    per_class: pd.DataFrame = field(default_factory=pd.DataFrame)
    confusion: pd.DataFrame = field(default_factory=pd.DataFrame)
    # as recorded, each distinct text once: {"targets": {name: text}, "configurations": [{key: value}]}
    targets: list[dict[str, Any]] = field(default_factory=list)
    adjust: str = "holm"
    correctness: pd.DataFrame = field(default_factory=pd.DataFrame)  # configuration, regime, seed, file, correct

    def write(self, out: Path) -> list[Path]:
        written = []
        if not self.correctness.empty:
            self.correctness.to_csv(out / CORRECTNESS, index=False, compression=_GZIP)
            written.append(out / CORRECTNESS)
        for name, file in FILES.items():
            frame = getattr(self, name)
            if not frame.empty:
                frame.to_csv(out / file, index=False)
                written.append(out / file)
        if self.targets:
            (out / "targets.json").write_text(json.dumps(self.targets, indent=2) + "\n", encoding="utf-8")
            written.append(out / "targets.json")
        return written


def in_table_order(finished: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """The finished runs with their configurations in the results table's order (the order they ran otherwise),
    so that the comparisons and per-class tables list configurations as the results table does."""
    keys = row_keys_of(table)
    if not keys or finished.empty:
        return finished
    order = {tuple(map(str, row)): i for i, row in enumerate(table[keys].itertuples(index=False))}
    rank = [order.get(tuple(map(str, row)), len(order)) for row in finished[keys].itertuples(index=False)]
    return finished.iloc[pd.Series(rank).argsort(kind="stable").to_numpy()]


def check_compare(table: pd.DataFrame, key: str | None, baseline: str | None) -> str | None:
    """The baseline value of `compare=key` (`baseline`, else the key's first value in the results table); a
    HarnessError naming what is allowed when the key does not vary in the report or the baseline is not a value."""
    if key is None:
        if baseline is not None:
            raise HarnessError(f"compare_baseline={baseline} needs compare=<key>")
        return None
    varying, _ = split_keys(table)  # row keys already
    if key not in varying:
        raise HarnessError(f"compare={key}: not a key whose value varies in this report; allowed: "
                           f"{', '.join(varying) or 'none (one configuration)'}")  # fmt: skip
    values = list(dict.fromkeys(table[key].astype(str)))
    if baseline is None:
        return values[0]
    for value in values:  # as logged (False, 1e-05) or as the tables print it (no); Hydra makes `false` False
        if baseline.lower() in (value.lower(), key_value(value)):
            return value
    shown = ", ".join(key_value(v) for v in values)
    raise HarnessError(f"compare_baseline={baseline}: not a value of {key}; its values: {shown}")


def analyse(
    runs: pd.DataFrame,
    finished: pd.DataFrame,
    table: pd.DataFrame,
    adjust: str = "holm",
    compare: str | None = None,
    compare_baseline: str | None = None,
    predictions: pd.DataFrame | None = None,
) -> Analysis:
    """Comparisons (adjusted over all of them, `compare`'s included), per-class accuracy, confusion counts, the
    recorded targets and every run's per-image correctness (`predictions`: `evidence.load_predictions`, loaded
    here when not given)."""
    keys = row_keys_of(table)
    baseline = check_compare(table, compare, compare_baseline)
    finished = in_table_order(finished, table)
    predictions = evidence.load_predictions(finished) if predictions is None else predictions
    found = evidence.comparisons(finished, predictions, keys)
    by_key = pd.DataFrame()
    if compare is not None and baseline is not None:
        by_key = evidence.key_comparisons(finished, predictions, keys, compare, baseline)
        if by_key.empty:
            log.warning("compare=%s: no run with %s=%s shares its regime, its other settings and a seed with a run of "
                        "another value: nothing to compare", compare, compare, key_value(baseline))  # fmt: skip
    evidence.adjust_together([found, by_key] if len(by_key) else [found], adjust)
    return Analysis(
        comparisons=found,
        by_key=by_key,
        per_class=evidence.per_class(finished, predictions, keys),
        confusion=evidence.confusion(finished, predictions, keys),
        targets=targets.recorded(runs, keys),
        adjust=adjust,
        correctness=correctness(finished, predictions, keys),
    )


def correctness(finished: pd.DataFrame, predictions: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The long per-image table a re-analysis starts from: configuration keys, regime, seed, file, correct (0/1)."""
    if predictions.empty:
        return pd.DataFrame()
    merged = predictions[["run_id", "file", "correct"]].merge(
        finished[["run_id", *keys, "regime", "seed"]], on="run_id"
    )
    return merged[[*keys, "regime", "seed", "file", "correct"]].astype({"file": str, "correct": int})


def read_correctness(folder: Path | str) -> pd.DataFrame:
    """A results folder's per-image correctness, keys and seeds as strings (empty when the report wrote none)."""
    path = Path(folder) / CORRECTNESS
    if not path.is_file():
        return pd.DataFrame()
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return frame.astype({"correct": int})


def read(folder: Path, table: pd.DataFrame) -> Analysis:
    """An analysis read back beside a results.csv; a version 1 folder without comparisons gets its results.csv's
    recorded fine-tuned − frozen paired t-test as the only comparison (the report says which test it is)."""
    keys = row_keys_of(table)
    text = {k: str for k in [*keys, "better", "baseline"]}  # as written: "1e-05" stays a string, not a float
    frames = {name: pd.read_csv(folder / file, dtype=text, keep_default_na=False, na_values={"mean": [""]})
              if (folder / file).is_file() else pd.DataFrame() for name, file in FILES.items()}  # fmt: skip
    comparisons = frames["comparisons"]
    if comparisons.empty and f"{DIFF}_n" in table and record_version.paired_t_stands_in(folder):
        comparisons = _recorded_paired_t(table, keys)
    by_key = frames["by_key"]
    numeric = ("n", "images", "mean", "ci_lo", "ci_hi", "p", "df", "sd_seeds", "seeds_for_80pct_power", "p_holm",
               "p_bh")  # fmt: skip
    for frame in (comparisons, by_key):
        for column in [c for c in numeric if c in frame]:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
        if not frame.empty and record_version.power_recomputed(folder):
            _paired_t_power(frame)
    adjusted = [c for c in comparisons.columns if c in ("p_holm", "p_bh")]
    recorded = json.loads((folder / "targets.json").read_text()) if (folder / "targets.json").is_file() else []
    recorded = [record_version.targets_entry(entry) for entry in recorded]
    adjust = adjusted[0].removeprefix("p_") if adjusted else "holm"
    return Analysis(comparisons, by_key, frames["per_class"], frames["confusion"], recorded, adjust)


def _paired_t_power(frame: pd.DataFrame) -> None:
    """Recompute, in place, the seeds for 80% power of the rows whose test is not the crossed t (recorded paired t
    and bootstrap rows) from their recorded difference and spread between seeds (version 1 folders; see
    `harness.record_version.power_recomputed`)."""
    from harness.report import stats

    recorded = ~frame["method"].astype(str).str.startswith("crossed")
    pairs = zip(frame.loc[recorded, "mean"], frame.loc[recorded, "sd_seeds"], strict=True)
    frame.loc[recorded, "seeds_for_80pct_power"] = [stats.seeds_for_power(m, sd) for m, sd in pairs]


def _recorded_paired_t(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    from harness.report import stats

    rows = table[table[f"{DIFF}_n"].astype(int) > 0]
    better, baseline = HEADLINE
    out = pd.DataFrame(
        {
            **{k: rows[k] for k in keys},
            "comparison": f"{REGIME_LABELS[better]} − {REGIME_LABELS[baseline]}",
            "better": better,
            "baseline": baseline,
            "n": rows[f"{DIFF}_n"].astype(int),
            "images": float("nan"),
            "mean": rows[f"{DIFF}_mean"],
            "ci_lo": rows[f"{DIFF}_ci95_lo"],
            "ci_hi": rows[f"{DIFF}_ci95_hi"],
            "p": rows[f"{DIFF}_p"],
            "method": evidence.PAIRED_T,
            "mcnemar_p": "",
            "sd_seeds": rows[f"{DIFF}_std"],
        }
    )
    pairs = zip(out["mean"], out["sd_seeds"], strict=True)
    out["seeds_for_80pct_power"] = [stats.seeds_for_power(m, s) for m, s in pairs]
    out["p_holm"] = stats.holm(out["p"].to_numpy(dtype=float))
    return out.reset_index(drop=True)


def sections(table: pd.DataFrame, analysis: Analysis) -> list[Section]:
    """The report's tables, in reading order: results, comparisons, targets, per class."""
    varying, _ = split_keys(table)
    out = [results_section(table)]
    family = len(analysis.comparisons) + len(analysis.by_key)
    if not analysis.comparisons.empty:
        out.append(comparisons_section(analysis.comparisons, varying, analysis.adjust, family))
    if not analysis.by_key.empty:
        out.append(key_comparisons_section(analysis.by_key, varying, analysis.adjust, family, analysis.comparisons))
    if analysis.targets:
        judged = pd.concat(
            [
                targets.judge(t["targets"], table, analysis.comparisons, row_keys_of(table), t["configurations"])
                for t in analysis.targets
            ],
            ignore_index=True,
        )
        out.append(targets_section(judged, varying, [t["targets"] for t in analysis.targets]))
    if not analysis.per_class.empty:
        out.append(per_class_section(analysis.per_class, varying))
    return out + transfer.sections(table, varying)
