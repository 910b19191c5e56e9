"""Targets stated before the run, judged against the results: met or not met, with the interval beside it.

An experiment config states them (`targets: {frozen: ">= 0.97", finetune_minus_frozen: "> 0"}`) and the
harness records them, as text, on the sweep's parent run (or the job run of a single job) when the work starts.
The report reads what was recorded, not today's config: a target edited after the results exists as another
recorded text, and the report lists every text it finds. A name is a regime (its mean test accuracy) or
`<regime>_minus_<regime>` (the mean paired difference, from the report's comparisons).
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from harness.errors import HarnessError
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


def recorded(runs: pd.DataFrame) -> list[dict[str, str]]:
    """Every distinct set of targets recorded on the study's sweep and job runs, oldest first."""
    if "tags.targets" not in runs:
        return []
    texts = runs.sort_values("start_time")["tags.targets"].dropna()
    return [json.loads(t) for t in dict.fromkeys(texts) if t]


def judge(targets: dict[str, str], table: pd.DataFrame, comparisons: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """One row per target and configuration: the observed mean, its 95% interval, and met / not met (by the
    mean; `interval` says whether the whole interval is on the target's side too)."""
    rows = []
    for name, text in targets.items():
        regime, baseline, op, threshold = parse(name, text)
        for _, config in table.iterrows():
            where = {k: config[k] for k in keys}
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
