"""Loading a study's runs from the MLflow store: regime runs, the sweep's ledger, run counts, curves."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from harness import record_version, tracking
from harness.config import RESULT_FREE_KEYS
from harness.errors import HarnessError
from harness.sweep import ledger
from harness.training import specs

log = logging.getLogger("harness.report")

REGIMES = specs.NAMES
REGIME_LABELS = {name: spec.label for name, spec in specs.REGIMES.items()}
REGIME_COLORS = {name: spec.color for name, spec in specs.REGIMES.items()}

# The configuration of a row, as a study's table lists it: report column -> flattened-config param of the run.
CONFIG_PARAMS = {
    "backbone": "backbone.name",
    "unfreeze_at": "unfreeze_at",
    "lr": "lr",
    "head_lr": "head_lr",
    "data_fraction": "data_fraction",
    "augment": "augment",
    "image_size": "backbone.image_size",
    **{f"epochs_{phase}": f"epochs.{phase}" for phase in specs.PHASES},
    **{column: key for spec in specs.REGIMES.values() for column, key in spec.columns.items()},  # their own nodes
}
# Keys derived from several params: the early-stopping rule and the step budget, each in one readable cell.
RULE_KEYS = ("stopping", "budget")
CONFIG_KEYS = (*CONFIG_PARAMS, *RULE_KEYS)
NUMERIC_KEYS = ("lr", "head_lr", "data_fraction", "image_size", *(f"epochs_{phase}" for phase in specs.PHASES))
PHASES = specs.PHASES
TAG_FALLBACK = ("backbone", "unfreeze_at", "lr", "data_fraction")  # also tags, for runs lacking params
# Params that never separate configurations: replicates (seed), bookkeeping, what a job ran (regimes), the
# backbone's default boundary (implied by backbone.name), and what a phase could run (epochs_max and
# steps_per_epoch differ between the regimes of one job by design).
NOT_CONFIG_PARAMS = {
    "seed",
    "regimes",
    "backbone.unfreeze_at",
    "data.on_bad_file",
    "data.max_pixels",
    "epochs_max",
    "steps_per_epoch",
    *(f"early_stopping.{k}" for k in ("enabled", "monitor", "patience", "min_delta")),  # in `stopping`
    *(f"steps_budget.{phase}" for phase in PHASES),  # in `budget`
    *RESULT_FREE_KEYS,
}
STATS = ("n", "test_acc_mean", "test_acc_std", "test_acc_ci95_lo", "test_acc_ci95_hi")
CURVE_STATS = ("tested_val_acc", "tested_epoch")
DIFF = "ft_minus_frozen"
MISSING = "–"


# ----------------------------------------------------------------------------------------------- loading


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    """A column of an MLflow search result, or all-missing when no run carries it."""
    if name in df.columns:
        return df[name]
    return pd.Series(np.nan, index=df.index, dtype=object)


def load_runs(tracking_uri: str | None, study: str, sweep: str | None = None) -> pd.DataFrame:
    """Every job and regime run of `study` (only those under sweep run `sweep` if given), any status.

    The MLflow columns are kept; plain columns are added for what the report uses: run_kind, regime,
    parent_run_id, seed, the configuration keys (CONFIG_KEYS, from params, tags as fallback), test_acc,
    test_loss, train_time_s. Raises HarnessError when the study or the sweep does not exist.
    """
    uri = tracking.open_existing(tracking_uri)
    runs = pd.DataFrame(tracking.study_runs_table(study, uri))
    runs["run_kind"] = _col(runs, "tags.run_kind")
    runs["regime"] = _col(runs, "tags.regime")
    runs["parent_run_id"] = _col(runs, f"tags.{MLFLOW_PARENT_RUN_ID}")
    runs["seed"] = _col(runs, "params.seed").fillna(_col(runs, "tags.seed"))
    for key, param in CONFIG_PARAMS.items():
        value = _col(runs, f"params.{param}")
        if key in TAG_FALLBACK:
            value = value.fillna(_col(runs, f"tags.{key}"))
        runs[key] = value
    runs["stopping"], runs["budget"] = stopping_rule(runs), step_budget(runs)
    for metric in ("test_acc", "test_loss", "train_time_s", "epochs_run", "best_epoch", "logme", "knn_loo_acc"):
        runs[metric] = pd.to_numeric(_col(runs, f"metrics.{metric}"), errors="coerce")
    runs["restored"] = _col(runs, "params.early_stopping.enabled").eq("True")  # the rule put the best epoch back
    n_train = pd.to_numeric(_col(runs, "params.data.n_train"), errors="coerce")  # on job runs
    runs["n_train"] = runs["parent_run_id"].map(pd.Series(n_train.to_numpy(), index=runs["run_id"]))
    runs["stopped_early"] = _col(runs, "tags.stopped").eq("early")

    if sweep is not None:
        sweeps = runs[runs["run_kind"] == "sweep"]
        if sweep not in set(sweeps["run_id"]):
            listed = ", ".join(f"{r.run_id} ({r.status})" for r in sweeps.itertuples()) or "none"
            raise HarnessError(f"sweep={sweep!r} is not a sweep run of study {study!r}; its sweeps: {listed}")
        reused = ledger_reused_jobs(runs[runs["run_id"] == sweep].iloc[0])
        jobs = runs[(runs["run_kind"] == "job") & ((runs["parent_run_id"] == sweep) | runs["run_id"].isin(reused))]
        keep = (
            (runs["run_id"] == sweep) | runs["run_id"].isin(jobs["run_id"]) | runs["parent_run_id"].isin(jobs["run_id"])
        )
        runs = runs[keep]
    runs = runs[runs["run_kind"].isin(["sweep", "job", "regime"])]
    return runs.reset_index(drop=True)


def _logged(value: object) -> bool:
    return isinstance(value, str) and value not in ("", "None")


def stopping_rule(runs: pd.DataFrame) -> pd.Series:
    """The early-stopping rule of each run as one cell: "val_loss, patience 5" (", min_delta 0.001" when set),
    or "off" (also for version 1 runs from before the rule, which all ran their epochs)."""

    def rule(row: pd.Series) -> str:
        if not _logged(row["params.early_stopping.enabled"]):
            return record_version.stopping_unlogged(row)
        if str(row["params.early_stopping.enabled"]) != "True":
            return "off"
        text = f"{row['params.early_stopping.monitor']}, patience {row['params.early_stopping.patience']}"
        delta = row["params.early_stopping.min_delta"]
        return text + (f", min_delta {delta}" if _logged(delta) and float(delta) else "")

    params = [f"params.early_stopping.{k}" for k in ("enabled", "monitor", "patience", "min_delta")]
    frame = pd.DataFrame({p: _col(runs, p) for p in [*params, f"tags.{record_version.TAG}"]}, index=runs.index)
    return frame.apply(rule, axis=1) if len(frame) else pd.Series("off", index=runs.index, dtype=object)


def step_budget(runs: pd.DataFrame) -> pd.Series:
    """The step budget of each run as one cell: "epochs" (none set) or "steps head 630, finetune 126"."""
    columns = {phase: _col(runs, f"params.steps_budget.{phase}") for phase in PHASES}

    def budget(i: int) -> str:
        set_ = [f"{phase} {col.iloc[i]}" for phase, col in columns.items() if _logged(col.iloc[i])]
        return "steps " + ", ".join(set_) if set_ else "epochs"

    return pd.Series([budget(i) for i in range(len(runs))], index=runs.index, dtype=object)


def ledger_reused_jobs(sweep_run: pd.Series) -> set[str]:
    """Job run ids that a sweep's ledger names as reused ("skipped: already FINISHED") from earlier sweeps.

    Each job of a sweep writes its ledger entry (`harness.sweep.ledger`); a skipped job trained nothing under this
    sweep, its runs live under the sweep that trained them. Only entries that carry the run id can be
    followed (sweeps recorded before the JSON ledger may lack it); `ledger_counts` says how many could not.
    """
    return {e.run_id for e in ledger.entries(sweep_run.to_dict()).values() if e.outcome == "skipped" and e.run_id}


def ledger_counts(runs: pd.DataFrame, sweep: str | None) -> dict[str, int]:
    """Outcomes of the sweep's jobs by its ledger, and how many skipped ones have no followable run id."""
    if sweep is None or not (runs["run_id"] == sweep).any():
        return {}
    written = ledger.entries(runs[runs["run_id"] == sweep].iloc[0].to_dict()).values()
    outcomes = pd.Series([e.outcome for e in written], dtype=object).value_counts().to_dict()
    return {**outcomes, "skipped_without_run_id": sum(e.outcome == "skipped" and not e.run_id for e in written)}


def extra_config_keys(regime_runs: pd.DataFrame) -> list[str]:
    """Other config params that differ between the runs (optimizer, head.pooling, data.path, ...).

    CONFIG_PARAMS does not include them, but merging e.g. adam and rmsprop runs into one
    row would report a mean over two different experiments; they become extra row keys instead.
    """
    covered = set(CONFIG_PARAMS.values()) | NOT_CONFIG_PARAMS
    params = [
        c
        for c in regime_runs.columns
        if c.startswith("params.")
        and c.removeprefix("params.") not in covered
        and c.removeprefix("params.").split(".")[0] not in RESULT_FREE_KEYS  # targets.scratch: a dict flattened
    ]
    varying = regime_runs[params].astype("string").fillna("").nunique() > 1
    return [c.removeprefix("params.") for c in params if varying[c]]


def _with_keys(regime_runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Regime runs with every row key as a non-missing string column (groupby would drop missing keys)."""
    extras = extra_config_keys(regime_runs)
    out = regime_runs.copy()
    for name in extras:
        out[name] = out[f"params.{name}"]
    keys = [*CONFIG_KEYS, *extras]
    for key in keys:  # a key no run logged (a study recorded before it existed): one empty value
        if key not in out:
            out[key] = ""
    out["epochs_run"] = pd.to_numeric(_col(out, "epochs_run"), errors="coerce")
    out["stopped_early"] = _col(out, "stopped_early").eq(True)
    out[keys] = out[keys].astype("string").fillna("")
    out["seed"] = out["seed"].astype("string").fillna("")
    return out, keys


def finished_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """FINISHED regime runs, one per (configuration, seed, regime): the newest when a job was re-run.

    Re-running a configuration with the same seed repeats a measurement, it does not add a replicate;
    counting both would shrink the intervals for nothing. The runs of a job that was reaped (its lease lost:
    another process may have trained the same job since) are not part of the record either, whatever their
    own status. See `run_counts` for what was left out.
    """
    reaped = runs.loc[(runs["run_kind"] == "job") & _col(runs, f"tags.{tracking.KILLED_REASON}").notna(), "run_id"]
    regime_runs = runs[
        (runs["run_kind"] == "regime") & (runs["status"] == "FINISHED") & ~runs["parent_run_id"].isin(set(reaped))
    ]
    regime_runs, keys = _with_keys(regime_runs)
    regime_runs = regime_runs.sort_values("start_time", kind="stable")
    return regime_runs.drop_duplicates([*keys, "seed", "regime"], keep="last").reset_index(drop=True)


def row_keys(finished: pd.DataFrame) -> list[str]:
    """The configuration columns of `finished_runs` output: CONFIG_KEYS plus the varying extras."""
    return [*CONFIG_KEYS, *extra_config_keys(finished)]


def run_counts(runs: pd.DataFrame) -> dict[str, Any]:
    """What was used and what was left out, by status, for the console and summary.json."""
    regime_runs = runs[runs["run_kind"] == "regime"]
    jobs = runs[runs["run_kind"] == "job"]
    finished = regime_runs[regime_runs["status"] == "FINISHED"]
    used = finished_runs(runs)
    return {
        "regime_runs": len(regime_runs),
        "finished_regime_runs": len(finished),
        "used_regime_runs": len(used),
        "superseded_reruns": len(finished) - len(used),
        "left_out": regime_runs.loc[regime_runs["status"] != "FINISHED", "status"].value_counts().to_dict(),
        "jobs": jobs["status"].value_counts().to_dict(),
    }


def load_curves(finished: pd.DataFrame, metric: str = "val_acc") -> pd.DataFrame:
    """Per-epoch history of `metric` of each run: long table run_id, step, <metric>, source_run_id.

    One MLflow request per run (search_runs only returns the last value); epoch = step + 1. A frozen run
    whose head phase was reused from the cache (tag head_phase=reused) logs no epochs of its own; it gets
    the history of the run that trained that head phase (same content-addressed head_phase_key), which is
    the same training by construction. `source_run_id` says where each curve came from.
    """

    def history(run_id: str) -> list[tuple[int, float]]:
        return tracking.metric_history(run_id, metric)

    rows = [(run_id, step, value, run_id) for run_id in finished["run_id"] for step, value in history(run_id)]
    have = {r[0] for r in rows}
    reused = finished[~finished["run_id"].isin(have) & _col(finished, "tags.head_phase_key").notna()]
    # a study without the frozen regime (scratch alone) has no head_phase_key column at all
    for key, runs in reused.groupby("tags.head_phase_key") if not reused.empty else ():
        trainers = tracking.find_runs(
            list(runs["experiment_id"].unique()),
            f"tags.head_phase_key = '{key}' and tags.head_phase = 'trained'",
            newest_first=True,
        )
        source = next((t.info.run_id for t in trainers if history(t.info.run_id)), None)
        if source is not None:
            rows += [(run_id, step, value, source) for run_id in runs["run_id"] for step, value in history(source)]
    curves = pd.DataFrame(rows, columns=["run_id", "step", metric, "source_run_id"])
    return curves.drop_duplicates(["run_id", "step"], keep="last")
