"""The report's aggregates as MLflow runs, so that MLflow's own compare and chart views show a study's answer.

MLflow's runs table shows one run at a time and cannot average seeds. The report therefore logs one report run
of the study (run_kind=report) and, nested under it, one summary run per configuration (run_kind=summary): the
configuration's keys as params; each regime's mean test accuracy, interval and n, and each comparison's
difference, interval and p-values as metrics. Their run kinds keep them apart from training runs: no report,
resume, claim or reaper ever takes them for one.
"""

from __future__ import annotations

import math

import pandas as pd
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NOTE

from harness import tracking
from harness.report.analysis import Analysis
from harness.report.render import key_value
from harness.report.tables import regimes_run, row_keys_of, split_keys

KIND = "summary"


def _metrics(row: pd.Series, comparisons: pd.DataFrame, ran: list[str], adjust: str) -> dict[str, float]:
    out = {}
    for regime in ran:
        for stat in ("n", "test_acc_mean", "test_acc_std", "test_acc_ci95_lo", "test_acc_ci95_hi"):
            out[f"{regime}_{stat}"] = row[f"{regime}_{stat}"]
    for _, c in comparisons.iterrows():
        name = f"{c['better']}_minus_{c['baseline']}"
        for stat in ("mean", "ci_lo", "ci_hi", "p", f"p_{adjust}"):
            out[f"{name}_{stat}"] = c[stat]
    return {k: float(v) for k, v in out.items() if v is not None and not pd.isna(v) and math.isfinite(float(v))}


def log_summary_runs(runs: pd.DataFrame, table: pd.DataFrame, analysis: Analysis, study: str, sweep: str | None) -> str:
    """The report run and its summary runs; returns the report run's id."""
    experiment_id = str(runs["experiment_id"].iloc[0])
    keys, (varying, _) = row_keys_of(table), split_keys(table)
    ran = regimes_run(table)
    scope = f"sweep {sweep}" if sweep else "every finished run of the study"
    parent = tracking.log_run(
        experiment_id,
        f"report {study}" + (f" sweep {sweep[:8]}" if sweep else ""),
        tags={"run_kind": "report", "report_scope": scope,
              MLFLOW_RUN_NOTE: f"Aggregates over seeds of {scope}, one nested summary run per configuration."},
        finished=False,
    )  # fmt: skip
    for _, row in table.iterrows():
        mine = analysis.comparisons
        for key in keys:
            if key in mine:
                mine = mine[mine[key].astype(str) == str(row[key])]
        name = ", ".join(f"{k}={key_value(row[k])}" for k in varying) or "all runs"
        tracking.log_run(
            experiment_id,
            name,
            tags={"run_kind": KIND, MLFLOW_PARENT_RUN_ID: parent, "summary_of": study},
            params={k: key_value(row[k]) for k in keys if str(row[k]) not in ("", "nan", "None")},
            metrics=_metrics(row, mine, ran, analysis.adjust),
        )
    tracking.end_run(parent, "FINISHED")
    return parent
