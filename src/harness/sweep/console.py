"""What a run or sweep tells its user at the end: a results table (one row per job: the swept keys, each
regime's test accuracy, the training time) and where to browse the runs in the MLflow UI."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from urllib.parse import urlparse

import pandas as pd

from harness.training import specs

log = logging.getLogger(__name__)

# MLflow 3.17's UI picks an experiment's page from this URL parameter, else from what the browser remembers,
# else the GenAI overview; it does not read the experiment's mlflow.experimentKind tag (tests/test_ui.py).
TRAINING_VIEW = "workflowType=machine_learning"


def swept_keys(jobs: Sequence[Sequence[str]], ignore: Sequence[str] = ()) -> list[str]:
    """The override keys whose value differs between jobs, in command-line order."""
    values: dict[str, set[str]] = {}
    for overrides in jobs:
        for override in overrides:
            key, _, value = override.partition("=")
            values.setdefault(key.lstrip("+~"), set()).add(value)
    return [key for key, seen in values.items() if len(seen) > 1 and key not in ignore]


def _param(run: pd.Series, key: str) -> str:
    for column in (f"params.{key}", f"params.{key}.name", f"tags.{key}"):
        if column in run and pd.notna(run[column]):
            return str(run[column])
    return "?"


def results_table(experiment_id: str, job_run_ids: Sequence[str], keys: Sequence[str]) -> pd.DataFrame:
    """One row per job run: its values of `keys`, the test accuracy of each regime it ran, minutes trained."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    from harness import tracking

    if not job_run_ids:
        return pd.DataFrame()
    quoted = ", ".join(f"'{run_id}'" for run_id in job_run_ids)
    jobs = tracking.runs_table(experiment_id, f"attributes.run_id IN ({quoted})")
    rows = []
    for _, job in jobs.iterrows():
        regimes = tracking.runs_table(
            experiment_id, f"tags.{MLFLOW_PARENT_RUN_ID} = '{job.run_id}' and tags.run_kind = 'regime'"
        )
        row = {key: _param(job, key) for key in keys or ["seed"]}
        for _, regime in regimes.iterrows():
            row[f"{regime['tags.regime']} test_acc"] = regime.get("metrics.test_acc")
        times = regimes["metrics.train_time_s"] if "metrics.train_time_s" in regimes else pd.Series(dtype=float)
        row["train min"] = f"{float(times.sum()) / 60:.1f}"
        rows.append(row)
    table = pd.DataFrame(rows)
    ordered = [c for c in table.columns if not c.endswith("test_acc")]
    ordered[-1:-1] = [f"{r} test_acc" for r in specs.NAMES if f"{r} test_acc" in table.columns]
    return table[ordered].sort_values(list(keys or ["seed"])).reset_index(drop=True)


def browse_hint(uri: str, experiment_id: str) -> str:
    """The URL of the study's runs table; with a local store, also the `mlflow ui` command that serves it."""
    from harness.redaction import redact
    from harness.tracking import artifact_location

    uri = redact(uri)
    page = f"#/experiments/{experiment_id}?{TRAINING_VIEW}"
    if urlparse(uri).scheme in ("http", "https"):
        return f"browse the runs: {uri.rstrip('/')}/{page}"
    serve = f"mlflow ui --backend-store-uri {uri}"
    artifacts = artifact_location(uri)
    if artifacts:
        serve += f" --default-artifact-root {artifacts}"
    return f"browse the runs: {serve}\n  then open http://127.0.0.1:5000/{page}"


def print_results(experiment_id: str, uri: str, job_run_ids: Sequence[str], keys: Sequence[str]) -> None:
    """Log the results table and the browse hint; a store that cannot be read here only costs the table."""
    try:
        table = results_table(experiment_id, job_run_ids, keys)
    except Exception as exc:  # noqa: BLE001 - the runs are recorded; the table is a courtesy
        log.warning("results table unavailable (%s: %s)", type(exc).__name__, exc)
        table = pd.DataFrame()
    if not table.empty:
        log.info(
            "results (test accuracy; the report has intervals and tests):\n%s",
            table.to_string(index=False, float_format=lambda v: f"{v:.4f}"),
        )
    log.info("%s", browse_hint(uri, experiment_id))
