"""Targets stated before the run, judged against the results: met or not met, with the interval beside it.

An experiment config states them (`targets: {frozen: ">= 0.97", finetune_minus_frozen: "> 0"}`) and the
harness records them, as text, on the sweep's parent run (or the job run of a single job) when the work starts.
The report reads what was recorded, not today's config: a target edited after the results exists as another
recorded text, and the report lists every text it finds. Each text is judged on the configurations it was
stated for (the jobs of the sweep that recorded it, those its ledger reused included), so two sweeps of one
study with their own targets (Chollet's small convnet without and with augmentation) are each judged on their
own rows. A name is a regime (its mean test accuracy) or `<regime>_minus_<regime>` (the mean paired
difference, from the report's comparisons).
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.report.runs import finished_runs, ledger_reused_jobs
from harness.training import specs

OPERATORS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
_TARGET = re.compile(r"^\s*(>=|<=|>|<)\s*([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)\s*$")


def parse(name: str, text: str) -> tuple[str, str | None, str, float]:
    """(regime, baseline or None, operator, threshold) of one target; HarnessError naming what is allowed."""
    found = _TARGET.match(str(text))
    regimes = name.split("_minus_")
    if found is None or len(regimes) > 2 or any(r not in specs.REGIMES for r in regimes):
        raise HarnessError(
            f"target {name}: {text!r} is not understood; a name is a regime ({', '.join(specs.NAMES)}) or "
            f"<regime>_minus_<regime>, a value is an operator ({', '.join(OPERATORS)}) and a number, "
            'e.g. frozen: ">= 0.97" or finetune_minus_frozen: "> 0"'
        )
    return regimes[0], regimes[1] if len(regimes) == 2 else None, found.group(1), float(found.group(2))


def recorded(runs: pd.DataFrame, keys: Sequence[str]) -> list[dict[str, Any]]:
    """Every distinct set of targets recorded on the study's sweep and job runs, oldest first, as
    {"targets": {name: text}, "configurations": [{key: value} of each configuration it was stated for]}."""
    if "tags.targets" not in runs:
        return []
    regime_runs = finished_runs(runs)  # with the configuration columns the table is keyed by
    found: dict[str, list[dict[str, str]]] = {}
    for _, run in runs.sort_values("start_time").iterrows():
        text = run["tags.targets"]
        if not isinstance(text, str) or not text:
            continue
        jobs = {run["run_id"]}
        if run["run_kind"] == "sweep":
            own = runs.loc[(runs["run_kind"] == "job") & (runs["parent_run_id"] == run["run_id"]), "run_id"]
            jobs = set(own) | ledger_reused_jobs(run)
        mine = regime_runs[regime_runs["parent_run_id"].isin(jobs)]
        configurations = found.setdefault(text, [])
        for configuration in mine[list(keys)].astype(str).drop_duplicates().to_dict("records"):
            if configuration not in configurations:
                configurations.append(configuration)
    return [{"targets": json.loads(text), "configurations": c} for text, c in found.items()]


def judge(
    targets: dict[str, str],
    table: pd.DataFrame,
    comparisons: pd.DataFrame,
    keys: Sequence[str],
    configurations: list[dict[str, str]] | None = None,
) -> pd.DataFrame:
    """One row per target and configuration it was stated for (all of them when `configurations` is None): the
    observed mean, its 95% interval, and met / not met (by the mean; `interval` says whether the whole
    interval is on the target's side too)."""
    rows = []
    for name, text in targets.items():
        regime, baseline, op, threshold = parse(name, text)
        for _, config in table.iterrows():
            where = {k: config[k] for k in keys}
            if configurations is not None and {k: str(v) for k, v in where.items()} not in configurations:
                continue
            if baseline is None:
                if not config.get(f"{regime}_n"):
                    continue
                mean = config[f"{regime}_test_acc_mean"]
                low, high = config[f"{regime}_test_acc_ci95_lo"], config[f"{regime}_test_acc_ci95_hi"]
            else:
                match = comparisons[(comparisons["better"] == regime) & (comparisons["baseline"] == baseline)]
                for key, value in where.items():
                    match = match[match[key].astype(str) == str(value)]
                if match.empty:
                    continue
                mean, low, high = match.iloc[0][["mean", "ci_lo", "ci_hi"]]
            met = bool(OPERATORS[op](mean, threshold))
            inside = np.isfinite(low) and OPERATORS[op](low, threshold) and OPERATORS[op](high, threshold)
            whole = bool(inside)
            rows.append({**where, "target": name, "stated": f"{op} {threshold:g}", "mean": mean, "ci_lo": low,
                         "ci_hi": high, "met": met, "interval": whole})  # fmt: skip
    return pd.DataFrame(rows, columns=[*keys, "target", "stated", "mean", "ci_lo", "ci_hi", "met", "interval"])
