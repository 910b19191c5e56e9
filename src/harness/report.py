"""`python -m harness.report`: the tables and figures of a study, read back from the MLflow store.

Nothing is re-trained: the regime runs of a study (optionally of one sweep) are read with
`mlflow.search_runs`, only FINISHED runs count (failed, killed and still-running ones are left out and
counted), and the seeds of each configuration are aggregated with Student-t intervals and a paired
fine-tuned vs frozen test, so the answer to "does fine-tuning beat feature extraction here?" comes with
its uncertainty. Outputs: CSV (every number, full precision), Markdown and LaTeX (formatted for reading
and pasting), a summary, and figures; the figures are also logged to the sweep's parent run.

    python -m harness.report study=my_study [sweep=<parent run id>] [out=reports/my_study] [tracking_uri=...]
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from omegaconf import DictConfig

from harness import backbones, stats
from harness.errors import HarnessError
from harness.figures import EMA_FACTOR, close, ema, plt  # pyplot with the Agg backend figures.py chose
from harness.identity import RESULT_FREE_KEYS
from harness.paths import conf_dir
from harness.tracking import resolve_tracking_uri

log = logging.getLogger("harness.report")

REGIMES = ("scratch", "frozen", "finetune")
REGIME_LABELS = {"scratch": "scratch", "frozen": "frozen", "finetune": "fine-tuned"}
REGIME_COLORS = {"scratch": "tab:gray", "frozen": "tab:blue", "finetune": "tab:orange"}

# The configuration of a row, as a study's table lists it: report column -> flattened-config param of the run.
CONFIG_PARAMS = {
    "backbone": "backbone.name",
    "unfreeze_at": "unfreeze_at",
    "lr": "lr",
    "head_lr": "head_lr",
    "data_fraction": "data_fraction",
    "augment": "augment",
    "image_size": "backbone.image_size",
    "epochs_scratch": "epochs.scratch",
    "epochs_head": "epochs.head",
    "epochs_finetune": "epochs.finetune",
}
CONFIG_KEYS = tuple(CONFIG_PARAMS)
NUMERIC_KEYS = ("lr", "head_lr", "data_fraction", "image_size", "epochs_scratch", "epochs_head", "epochs_finetune")
TAG_FALLBACK = ("backbone", "unfreeze_at", "lr", "data_fraction")  # also tags, for runs lacking params
# Params that never separate configurations: replicates (seed), bookkeeping, and what a job ran (regimes)
# or the backbone's default boundary (implied by backbone.name).
NOT_CONFIG_PARAMS = {"seed", "regimes", "backbone.unfreeze_at", "data.on_bad_file", *RESULT_FREE_KEYS}
STATS = ("n", "test_acc_mean", "test_acc_std", "test_acc_ci95_lo", "test_acc_ci95_hi")
CURVE_STATS = ("best_val_acc", "best_val_epoch")
DIFF = "ft_minus_frozen"
MISSING = "–"
LEDGER_TAG = "tags.job."  # the sweep's ledger: one tag per job, "<finished|skipped|failed> [detail]"
RUN_ID = re.compile(r"\b[0-9a-f]{32}\b")

FIGURE_CURVES = "val_acc_curves_{:02d}.png"
FIGURE_UNFREEZE = "test_acc_vs_unfreeze_at.png"
FIGURE_FRACTION = "test_acc_vs_data_fraction.png"


# ----------------------------------------------------------------------------------------------- loading


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    """A column of an MLflow search result, or all-missing when no run carries it."""
    if name in df.columns:
        return df[name]
    return pd.Series(np.nan, index=df.index, dtype=object)


def connect(tracking_uri: str | None) -> str:
    """Point MLflow at an existing store; a report never creates one (a typo would look like 'no runs')."""
    import mlflow

    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.is_file():
            raise HarnessError(
                f"no MLflow store at {db} (tracking_uri={uri!r}): run a study first or fix tracking_uri="
            )
    mlflow.set_tracking_uri(uri)
    return uri


def load_runs(tracking_uri: str | None, study: str, sweep: str | None = None) -> pd.DataFrame:
    """Every job and regime run of `study` (only those under sweep run `sweep` if given), any status.

    The MLflow columns are kept; plain columns are added for what the report uses: run_kind, regime,
    parent_run_id, seed, the configuration keys (CONFIG_KEYS, from params, tags as fallback), test_acc,
    test_loss, train_time_s. Raises HarnessError when the study or the sweep does not exist.
    """
    import mlflow

    uri = connect(tracking_uri)
    experiment = mlflow.get_experiment_by_name(study)
    if experiment is None:
        known = sorted(e.name for e in mlflow.search_experiments())
        raise HarnessError(f"study {study!r} does not exist in {uri}; studies there: {', '.join(known) or 'none'}")
    raw = mlflow.search_runs(experiment_ids=[experiment.experiment_id], max_results=100_000, output_format="pandas")
    runs = pd.DataFrame(raw)
    runs["run_kind"] = _col(runs, "tags.run_kind")
    runs["regime"] = _col(runs, "tags.regime")
    runs["parent_run_id"] = _col(runs, "tags.mlflow.parentRunId")
    runs["seed"] = _col(runs, "params.seed").fillna(_col(runs, "tags.seed"))
    for key, param in CONFIG_PARAMS.items():
        value = _col(runs, f"params.{param}")
        if key in TAG_FALLBACK:
            value = value.fillna(_col(runs, f"tags.{key}"))
        runs[key] = value
    for metric in ("test_acc", "test_loss", "train_time_s"):
        runs[metric] = pd.to_numeric(_col(runs, f"metrics.{metric}"), errors="coerce")

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


def ledger_reused_jobs(sweep_run: pd.Series) -> set[str]:
    """Job run ids that a sweep's ledger names as reused ("skipped: already FINISHED") from earlier sweeps.

    The sweep callback writes one `tags.job.<n>` per job; a skipped job trained nothing under this sweep,
    its runs live under the sweep that trained them. Only ledger entries that carry the run id can be
    followed; `ledger_counts` says how many could not.
    """
    entries = [str(v) for k, v in sweep_run.items() if k.startswith(LEDGER_TAG) and isinstance(v, str)]
    return {run_id for e in entries if e.startswith("skipped") for run_id in RUN_ID.findall(e)}


def ledger_counts(runs: pd.DataFrame, sweep: str | None) -> dict[str, int]:
    """Outcomes of the sweep's jobs by its ledger, and how many skipped ones have no followable run id."""
    if sweep is None or not (runs["run_id"] == sweep).any():
        return {}
    sweep_run = runs[runs["run_id"] == sweep].iloc[0]
    entries = [str(v) for k, v in sweep_run.items() if k.startswith(LEDGER_TAG) and isinstance(v, str)]
    outcomes = pd.Series([e.split(" ", 1)[0] for e in entries], dtype=object).value_counts().to_dict()
    skipped = [e for e in entries if e.startswith("skipped")]
    return {**outcomes, "skipped_without_run_id": sum(not RUN_ID.search(e) for e in skipped)}


def extra_config_keys(regime_runs: pd.DataFrame) -> list[str]:
    """Other config params that differ between the runs (optimizer, head.pooling, data.path, ...).

    The issue's configuration keys do not include them, but merging e.g. adam and rmsprop runs into one
    row would report a mean over two different experiments; they become extra row keys instead.
    """
    covered = set(CONFIG_PARAMS.values()) | NOT_CONFIG_PARAMS
    params = [c for c in regime_runs.columns if c.startswith("params.") and c.removeprefix("params.") not in covered]
    varying = regime_runs[params].astype("string").fillna("").nunique() > 1
    return [c.removeprefix("params.") for c in params if varying[c]]


def _with_keys(regime_runs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Regime runs with every row key as a non-missing string column (groupby would drop missing keys)."""
    extras = extra_config_keys(regime_runs)
    out = regime_runs.copy()
    for name in extras:
        out[name] = out[f"params.{name}"]
    keys = [*CONFIG_KEYS, *extras]
    out[keys] = out[keys].astype("string").fillna("")
    out["seed"] = out["seed"].astype("string").fillna("")
    return out, keys


def finished_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """FINISHED regime runs, one per (configuration, seed, regime): the newest when a job was re-run.

    Re-running a configuration with the same seed repeats a measurement, it does not add a replicate;
    counting both would shrink the intervals for nothing. See `run_counts` for what was left out.
    """
    regime_runs = runs[(runs["run_kind"] == "regime") & (runs["status"] == "FINISHED")]
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
    import mlflow

    client = mlflow.MlflowClient()

    def history(run_id: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in client.get_metric_history(run_id, metric)]

    rows = [(run_id, step, value, run_id) for run_id in finished["run_id"] for step, value in history(run_id)]
    have = {r[0] for r in rows}
    reused = finished[~finished["run_id"].isin(have) & _col(finished, "tags.head_phase_key").notna()]
    for key, runs in reused.groupby("tags.head_phase_key"):
        trainers = client.search_runs(
            list(runs["experiment_id"].unique()),
            filter_string=f"tags.head_phase_key = '{key}' and tags.head_phase = 'trained'",
            order_by=["attributes.start_time DESC"],
        )
        source = next((t.info.run_id for t in trainers if history(t.info.run_id)), None)
        if source is not None:
            rows += [(run_id, step, value, source) for run_id in runs["run_id"] for step, value in history(source)]
    curves = pd.DataFrame(rows, columns=["run_id", "step", metric, "source_run_id"])
    return curves.drop_duplicates(["run_id", "step"], keep="last")


# ------------------------------------------------------------------------------------------ aggregation


def _boundary_order(backbone: str, layer: str) -> int:
    try:
        return backbones.boundary_index(backbone, layer)
    except (HarnessError, ValueError):
        return 10_000  # unknown backbone or layer: after the known ones, alphabetically


def _sorted_rows(table: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Rows in study order: boundaries in network order, numbers numerically, the rest alphabetically."""
    order = table[list(keys)].copy()
    for key in NUMERIC_KEYS:
        order[key] = pd.to_numeric(order[key], errors="coerce")
    order["_boundary"] = [_boundary_order(b, u) for b, u in zip(table["backbone"], table["unfreeze_at"], strict=True)]
    by = ["backbone", "_boundary", *[k for k in keys if k != "backbone"]]
    return table.loc[order.sort_values(by, kind="stable").index].reset_index(drop=True)


def best_validation(finished: pd.DataFrame, curves: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Best epoch of the seed-mean validation curve of each (configuration, regime).

    The seeds' curves are averaged per epoch first, so the epoch is one number that says how long to
    train that configuration (Chollet 5.3's reading of the curves), not a mean of noisy per-seed argmaxes.
    """
    group = [*keys, "regime"]
    merged = curves.dropna(subset=["val_acc"]).merge(finished[["run_id", *group]], on="run_id")
    if merged.empty:
        return pd.DataFrame(columns=list(CURVE_STATS), index=pd.MultiIndex.from_tuples([], names=group))
    mean_curve = merged.groupby([*group, "step"], sort=False)["val_acc"].mean().reset_index()
    best = mean_curve.loc[mean_curve.groupby(group, sort=False)["val_acc"].idxmax()]
    return pd.DataFrame(
        {"best_val_acc": best["val_acc"].to_numpy(), "best_val_epoch": (best["step"] + 1).to_numpy()},
        index=pd.MultiIndex.from_frame(best[group]),
    )


def paired_differences(finished: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Fine-tuned minus frozen test_acc, paired by (configuration, seed): the frozen run of the same job."""
    columns = [f"{DIFF}_{s}" for s in ("n", "mean", "std", "ci95_lo", "ci95_hi", "t", "p")]
    sides = finished[finished["regime"].isin(["frozen", "finetune"])]
    wide = sides.set_index([*keys, "seed", "regime"])["test_acc"].unstack("regime")
    if wide.empty or not {"frozen", "finetune"} <= set(wide.columns):
        return pd.DataFrame(columns=columns, index=pd.MultiIndex.from_tuples([], names=list(keys)))
    tests = wide.groupby(level=list(keys), sort=False).apply(
        lambda g: pd.Series(stats.paired_test(g["finetune"], g["frozen"]))
    )
    tests = tests.rename(columns={"ci_lo": "ci95_lo", "ci_hi": "ci95_hi"}).add_prefix(f"{DIFF}_")
    return tests[columns]


def summarize(runs: pd.DataFrame, curves: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per configuration, scratch / frozen / finetune side by side, aggregated over seeds.

    Per regime: n (finished runs = seeds), mean, std (ddof=1) and 95% Student-t interval of test_acc,
    best seed-mean val_acc and its epoch (needs `curves`, see `load_curves`), mean train_time_s and the
    seeds. Then the paired fine-tuned - frozen difference (ttest_rel; NaN below two pairs). Only FINISHED
    runs count (see `finished_runs`); a configuration missing a regime has n = 0 and blanks there.
    """
    finished = finished_runs(runs)
    keys = row_keys(finished)
    if finished.empty:
        return pd.DataFrame(columns=["config", *keys])
    group = [*keys, "regime"]
    per = finished.groupby(group, sort=False).agg(
        n=("run_id", "size"),
        n_test=("test_acc", "count"),
        test_acc_mean=("test_acc", "mean"),
        test_acc_std=("test_acc", "std"),
        train_time_s=("train_time_s", "mean"),
        seeds=("seed", lambda s: ",".join(sorted(s, key=lambda v: (len(v), v)))),
    )
    half = stats.t_half_width(per["test_acc_std"], per["n_test"])
    per["test_acc_ci95_lo"] = per["test_acc_mean"] - half
    per["test_acc_ci95_hi"] = per["test_acc_mean"] + half
    best = best_validation(finished, curves, keys) if curves is not None else None
    per = per.join(best) if best is not None else per.assign(best_val_acc=np.nan, best_val_epoch=np.nan)
    regime_stats = [*STATS, *CURVE_STATS, "train_time_s", "seeds"]
    wide = per[regime_stats].unstack("regime")
    wide = wide.reindex(columns=pd.MultiIndex.from_product([regime_stats, REGIMES]))
    wide = wide.swaplevel(axis=1).reindex(columns=pd.MultiIndex.from_product([REGIMES, regime_stats]))
    wide.columns = [f"{regime}_{stat}" for regime, stat in wide.columns]
    for regime in REGIMES:
        wide[f"{regime}_n"] = wide[f"{regime}_n"].fillna(0).astype(int)
        wide[f"{regime}_best_val_epoch"] = wide[f"{regime}_best_val_epoch"].astype("Int64")
    table = wide.join(paired_differences(finished, keys))
    table[f"{DIFF}_n"] = table[f"{DIFF}_n"].fillna(0).astype(int)
    table = _sorted_rows(table.reset_index(), keys)
    table.insert(0, "config", range(1, len(table) + 1))
    return table


# ---------------------------------------------------------------------------------------------- formatting


def _acc(x: float) -> str:
    return MISSING if pd.isna(x) else f"{x:.3f}"


def _signed(x: float) -> str:
    return MISSING if pd.isna(x) else f"{x:+.3f}"


def _interval(lo: float, hi: float, fmt=_acc) -> str:
    return MISSING if pd.isna(lo) or pd.isna(hi) else f"[{fmt(lo)}, {fmt(hi)}]"


def _p(x: float) -> str:
    return MISSING if pd.isna(x) else f"{x:.3g}"


def shown_keys(table: pd.DataFrame) -> tuple[list[str], dict[str, str]]:
    """Row keys worth a column (backbone, unfreeze_at, and whatever varies) and the constant rest."""
    keys = [c for c in table.columns if c in row_keys_of(table)]
    shown = [k for k in keys if k in ("backbone", "unfreeze_at") or table[k].nunique() > 1]
    common = {k: str(table[k].iloc[0]) for k in keys if k not in shown and len(table)}
    return shown, common


def row_keys_of(table: pd.DataFrame) -> list[str]:
    """The configuration columns of a `summarize` table (between `config` and the first regime column)."""
    cols = list(table.columns)
    return cols[1 : cols.index(f"{REGIMES[0]}_n")]


def display_table(table: pd.DataFrame, latex: bool = False) -> pd.DataFrame:
    """The summary as strings for reading: (group, column) MultiIndex columns, blanks as '–'.

    Regimes that no run of the study has are left out (the CSV keeps them, for a stable schema).
    """
    shown, _ = shown_keys(table)
    pm = "$\\pm$" if latex else "±"
    delta = "$\\Delta$ fine-tuned $-$ frozen" if latex else "Δ fine-tuned − frozen"
    out: dict[tuple[str, str], pd.Series] = {("", "config"): table["config"].astype(str)}
    for key in shown:
        out[("", key)] = table[key].astype(str)
    for regime in REGIMES:
        if not table[f"{regime}_n"].any():
            continue
        label = REGIME_LABELS[regime]
        c = {stat: table[f"{regime}_{stat}"] for stat in (*STATS, *CURVE_STATS, "train_time_s")}
        out[(label, "n")] = c["n"].astype(str)
        out[(label, f"test acc {pm} sd")] = [
            MISSING if pd.isna(m) else f"{m:.3f}" + ("" if pd.isna(s) else f" {pm} {s:.3f}")
            for m, s in zip(c["test_acc_mean"], c["test_acc_std"], strict=True)
        ]
        out[(label, "95% CI")] = [
            _interval(lo, hi) for lo, hi in zip(c["test_acc_ci95_lo"], c["test_acc_ci95_hi"], strict=True)
        ]
        out[(label, "best val (epoch)")] = [
            MISSING if pd.isna(v) else f"{v:.3f} ({int(e)})"
            for v, e in zip(c["best_val_acc"], c["best_val_epoch"], strict=True)
        ]
        out[(label, "time s")] = [MISSING if pd.isna(t) else f"{t:.1f}" for t in c["train_time_s"]]
    if table[f"{DIFF}_n"].any():
        d = {s: table[f"{DIFF}_{s}"] for s in ("n", "mean", "ci95_lo", "ci95_hi", "p")}
        out[(delta, "pairs")] = d["n"].astype(str)
        out[(delta, "mean")] = [_signed(x) for x in d["mean"]]
        out[(delta, "95% CI")] = [_interval(lo, hi, _signed) for lo, hi in zip(d["ci95_lo"], d["ci95_hi"], strict=True)]
        out[(delta, "p (paired t)")] = [_p(x) for x in d["p"]]
    shown_df = pd.DataFrame({k: list(v) for k, v in out.items()})
    shown_df.columns = pd.MultiIndex.from_tuples(out.keys())
    return shown_df


def to_markdown(table: pd.DataFrame) -> str:
    """GitHub Markdown: the table, then the configuration shared by every row."""
    shown = display_table(table)
    shown.columns = [f"{group} {name}".strip() for group, name in shown.columns]
    _, common = shown_keys(table)
    text = shown.to_markdown(index=False, disable_numparse=True)
    if common:
        text += "\n\nAll rows: " + ", ".join(f"{k}={v}" for k, v in common.items()) + "\n"
    return text + "\n"


_LATEX_SPECIALS = str.maketrans(
    {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
        "–": "--",
    }
)


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters in a config value or name (layer names have underscores)."""
    return str(text).translate(_LATEX_SPECIALS)


def to_latex(table: pd.DataFrame) -> str:
    """A booktabs `tabular` for \\input into a paper (needs \\usepackage{booktabs}); notes as comments."""
    shown = display_table(table, latex=True)
    escaped_cells = shown.map(lambda v: v if "$" in v else latex_escape(v))
    escaped_cells.columns = pd.MultiIndex.from_tuples(
        [tuple(v if "$" in v else latex_escape(v) for v in pair) for pair in shown.columns]
    )
    n_keys = 1 + len(shown_keys(table)[0])  # config number and configuration: left; numbers: right
    column_format = "l" * n_keys + "r" * (shown.shape[1] - n_keys)
    styler = escaped_cells.style.hide(axis="index")
    text = styler.to_latex(hrules=True, multicol_align="c", column_format=column_format)
    _, common = shown_keys(table)
    notes = [f"% all rows: {latex_escape(', '.join(f'{k}={v}' for k, v in common.items()))}"] if common else []
    notes.append("% needs \\usepackage{booktabs}; cells: mean $\\pm$ sd over seeds, Student-t 95% CI")
    return text + "\n".join(notes) + "\n"


# ----------------------------------------------------------------------------------------------- figures


def _varying(table: pd.DataFrame, keys: Iterable[str], exclude: Iterable[str]) -> list[str]:
    return [k for k in keys if k not in set(exclude) and table[k].nunique() > 1]


def _title(values: dict[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in values.items()]
    lines, line = [], ""
    for part in parts:
        if line and len(line) + len(part) > 90:
            lines.append(line)
            line = ""
        line = f"{line}  {part}".strip()
    return "\n".join([*lines, line])


def curves_figure(finished: pd.DataFrame, curves: pd.DataFrame, title: str = "") -> Figure:
    """Validation accuracy of the regimes of one configuration overlaid, raw and EMA-smoothed.

    Thin lines: seeds; thick: their mean. Fine-tuning's epochs continue after the head phase, so the
    fine-tuned curve starts where the frozen one ends, as in Chollet's plots.
    """
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    merged = curves.merge(finished[["run_id", "regime", "seed"]], on="run_id").sort_values("step")
    for regime in REGIMES:
        part = merged[merged["regime"] == regime]
        if part.empty:
            continue
        color, label = REGIME_COLORS[regime], REGIME_LABELS[regime]
        mean = part.groupby("step")["val_acc"].mean()
        epochs = mean.index.to_numpy() + 1
        for _, seed_curve in part.groupby("seed"):
            axes[0].plot(seed_curve["step"] + 1, seed_curve["val_acc"], color=color, alpha=0.3, linewidth=1)
        axes[0].plot(epochs, mean.to_numpy(), "o-", color=color, markersize=4, label=f"{label} (mean of seeds)")
        axes[1].plot(epochs, ema(mean.tolist()), "o-", color=color, markersize=4, label=label)
    head_epochs = pd.to_numeric(finished.loc[finished["regime"] == "finetune", "epochs_head"], errors="coerce")
    for ax, name in zip(axes, ("raw", f"EMA {EMA_FACTOR:.1f}"), strict=True):
        if head_epochs.notna().any():  # as in Chollet's plots: where the head phase ends
            ax.axvline(head_epochs.max() + 0.5, color="grey", linestyle="--", linewidth=1, label="start fine-tuning")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"validation accuracy ({name})")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("val_acc")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


LINESTYLES = ("-", "--", ":", "-.")


def _regime_lines(table: pd.DataFrame, others: list[str]) -> Iterable[tuple[str, dict[str, Any], pd.DataFrame]]:
    """(regime, plot style, rows) for each regime and combination of the other varying keys.

    Colour says the regime, line style the combination of other keys (named in the legend).
    """
    groups = table.groupby(others, sort=False) if others else [((), table)]
    for i, (values, rows) in enumerate(groups):
        values = values if isinstance(values, tuple) else (values,)
        suffix = ", ".join(f"{k}={v}" for k, v in zip(others, values, strict=True))
        for regime in REGIMES:
            have = rows[rows[f"{regime}_test_acc_mean"].notna()]
            if not have.empty:
                style = {
                    "color": REGIME_COLORS[regime],
                    "linestyle": LINESTYLES[i % len(LINESTYLES)],
                    "label": REGIME_LABELS[regime] + (f" ({suffix})" if suffix else ""),
                }
                yield regime, style, have


def _ci_errors(rows: pd.DataFrame, regime: str) -> np.ndarray:
    mean = rows[f"{regime}_test_acc_mean"]
    lower = (mean - rows[f"{regime}_test_acc_ci95_lo"]).fillna(0)
    upper = (rows[f"{regime}_test_acc_ci95_hi"] - mean).fillna(0)
    return np.vstack([lower.to_numpy(), upper.to_numpy()])


def unfreeze_figure(table: pd.DataFrame) -> Figure:
    """Test accuracy against the fine-tuning boundary, boundaries in network order, 95% CI bars.

    Scratch and frozen do not depend on the boundary; they are drawn per boundary anyway (each job
    trained them) and so show the seed-to-seed noise level against which fine-tuning's gain is read.
    """
    keys = row_keys_of(table)
    backbone_names = list(dict.fromkeys(table["backbone"]))
    fig, axes = plt.subplots(1, len(backbone_names), figsize=(6.5 * len(backbone_names), 4.5), squeeze=False)
    others = _varying(table, keys, ("unfreeze_at", "backbone"))
    for ax, backbone in zip(axes[0], backbone_names, strict=True):
        part = table[table["backbone"] == backbone]
        order = sorted(part["unfreeze_at"].unique(), key=lambda layer: (_boundary_order(backbone, layer), layer))
        position = {layer: i for i, layer in enumerate(order)}
        for regime, style, rows in _regime_lines(part, others):
            rows = rows.assign(_x=rows["unfreeze_at"].map(position)).sort_values("_x")
            y, yerr = rows[f"{regime}_test_acc_mean"], _ci_errors(rows, regime)
            ax.errorbar(rows["_x"], y, yerr=yerr, marker="o", capsize=3, **style)
        ax.set_xticks(range(len(order)), order, rotation=30, ha="right")
        ax.set_xlabel(f"unfreeze_at ({backbone}, bottom to top)")
        ax.set_ylabel("test accuracy (mean, 95% CI)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def fraction_figure(table: pd.DataFrame) -> Figure:
    """Test accuracy against the fraction of training data, one line per regime, 95% CI bands."""
    keys = row_keys_of(table)
    others = _varying(table, keys, ("data_fraction",))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for regime, style, rows in _regime_lines(table, others):
        rows = rows.assign(_x=pd.to_numeric(rows["data_fraction"], errors="coerce")).sort_values("_x")
        ax.errorbar(rows["_x"], rows[f"{regime}_test_acc_mean"], yerr=_ci_errors(rows, regime), marker="o", **style)
        lo, hi = rows[f"{regime}_test_acc_ci95_lo"], rows[f"{regime}_test_acc_ci95_hi"]
        ax.fill_between(rows["_x"], lo, hi, color=style["color"], alpha=0.15)  # the band between fractions
    ax.set_xlabel("data_fraction (of the training split)")
    ax.set_ylabel("test accuracy (mean, 95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    close(fig)
    return path


def write_figures(table: pd.DataFrame, finished: pd.DataFrame, curves: pd.DataFrame, out: Path) -> list[Path]:
    """The per-configuration curves (named by the table's `config` number) and the two study figures."""
    keys = row_keys_of(table)
    for stale in out.glob(FIGURE_CURVES.replace("{:02d}", "*")):
        stale.unlink()  # a previous report of more configurations
    written = []
    runs_by_config = finished.merge(table[["config", *keys]], on=keys)
    for config, runs in runs_by_config.groupby("config"):
        row = table[table["config"] == config].iloc[0]
        title = f"config {config}: " + _title({k: row[k] for k in keys})
        written.append(_save(curves_figure(runs, curves, title), out / FIGURE_CURVES.format(config)))
    if table[[f"{r}_test_acc_mean" for r in REGIMES]].notna().any().any():
        written.append(_save(unfreeze_figure(table), out / FIGURE_UNFREEZE))
        written.append(_save(fraction_figure(table), out / FIGURE_FRACTION))
    else:
        log.info("no test_acc in any run (no test split): test-accuracy figures skipped")
    return written


# ------------------------------------------------------------------------------------------- the report


@dataclass
class Report:
    """What `build_report` produced: the summary table, the counts and the files written."""

    table: pd.DataFrame
    summary: dict[str, Any]
    files: list[Path] = field(default_factory=list)


def parent_run(runs: pd.DataFrame, finished: pd.DataFrame, sweep: str | None) -> str | None:
    """The sweep run that owns every reported job: `sweep`, or the single sweep of the study's jobs."""
    if sweep is not None:
        return sweep
    jobs = runs[runs["run_kind"] == "job"].set_index("run_id")["parent_run_id"]
    parents = finished["parent_run_id"].map(jobs)
    owners = set(parents.dropna())
    return owners.pop() if len(owners) == 1 and parents.notna().all() else None


def write_report(
    table: pd.DataFrame,
    finished: pd.DataFrame,
    curves: pd.DataFrame,
    out: Path | str,
    summary: dict[str, Any] | None = None,
) -> list[Path]:
    """results.csv (every number), results.md, results.tex, summary.json and the figures into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "results.csv", out / "results.md", out / "results.tex"]
    table.to_csv(files[0], index=False)
    files[1].write_text(to_markdown(table), encoding="utf-8")
    files[2].write_text(to_latex(table), encoding="utf-8")
    files += write_figures(table, finished, curves, out)
    if summary is not None:
        files.append(out / "summary.json")
        summary = {**summary, "files": [p.name for p in files]}
        files[-1].write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return files


def log_to_run(run_id: str, files: Iterable[Path], artifact_path: str = "report") -> None:
    """Attach the report's files to an MLflow run (the sweep's parent run), under `report/`."""
    import mlflow

    client = mlflow.MlflowClient()
    for path in files:
        client.log_artifact(run_id, str(path), artifact_path)


def build_report(
    tracking_uri: str | None,
    study: str,
    sweep: str | None = None,
    out: Path | str | None = None,
    log_to_parent: bool = True,
) -> Report:
    """Load, summarize, write and (when the runs belong to one sweep) log the report of a study.

    Raises HarnessError when there is nothing to report: no store, no such study or sweep, or no
    FINISHED regime run (the message says how many runs were left out and why).
    """
    runs = load_runs(tracking_uri, study, sweep)
    counts = run_counts(runs)
    where = f"study {study!r}" + (f", sweep {sweep}" if sweep else "")
    if counts["used_regime_runs"] == 0:
        raise HarnessError(f"{where} has no finished runs to report ({_left_out_text(counts)})")
    finished = finished_runs(runs)
    curves = load_curves(finished)
    table = summarize(runs, curves)
    parent = parent_run(runs, finished, sweep)
    summary = {
        "study": study,
        "tracking_uri": resolve_tracking_uri(tracking_uri),
        "sweep": sweep,
        "parent_run": parent,
        "configurations": len(table),
        "row_keys": row_keys_of(table),
        **counts,
        "sweep_ledger": ledger_counts(runs, sweep),
        "curves_from_head_phase_source": int(
            curves.loc[curves["run_id"] != curves["source_run_id"], "run_id"].nunique()
        ),
    }
    summary["logged_to_run"] = parent if log_to_parent else None
    files = write_report(table, finished, curves, out or Path("reports") / study, summary)
    if summary["logged_to_run"] is not None:
        log_to_run(parent, files)
    return Report(table, summary, files)


def _left_out_text(counts: dict[str, Any]) -> str:
    left = counts["left_out"]
    text = ", ".join(f"{n} {status}" for status, n in sorted(left.items())) if left else "none"
    jobs = ", ".join(f"{n} {status}" for status, n in sorted(counts["jobs"].items())) or "none"
    return f"{counts['regime_runs']} regime run(s); left out, not FINISHED: {text}; jobs: {jobs}"


def summary_text(report: Report) -> str:
    """The console summary: what was used, what was left out and why, where the files went."""
    s = report.summary
    lines = [
        f"study {s['study']!r} ({s['tracking_uri']})" + (f", sweep {s['sweep']}" if s["sweep"] else ""),
        f"  used {s['used_regime_runs']} finished regime run(s) in {s['configurations']} configuration(s)",
        f"  {_left_out_text(s)}",
    ]
    if s["sweep_ledger"]:
        outcomes = {k: v for k, v in s["sweep_ledger"].items() if k != "skipped_without_run_id"}
        lines.append(f"  sweep ledger: {', '.join(f'{n} {o}' for o, n in sorted(outcomes.items()))}")
    if s["sweep_ledger"].get("skipped_without_run_id"):
        lines.append(
            f"  {s['sweep_ledger']['skipped_without_run_id']} job(s) of this sweep were skipped as already FINISHED"
            " in the study and the ledger does not say which run: they are not in this report (leave out sweep="
            " to include every finished run of the study)"
        )
    if s["curves_from_head_phase_source"]:
        lines.append(
            f"  {s['curves_from_head_phase_source']} frozen run(s) reused a cached head phase and logged no epochs:"
            " their val_acc curve is the one of the run that trained it"
        )
    if s["superseded_reruns"]:
        lines.append(f"  {s['superseded_reruns']} re-run(s) of the same configuration and seed: newest kept")
    if s["logged_to_run"]:
        lines.append(f"  report logged to parent run {s['logged_to_run']} (artifacts report/)")
    elif s["parent_run"] is None:
        lines.append("  no single sweep run owns these runs: not logged to MLflow (sweep=<parent run id> picks one)")
    return "\n".join(lines)


@hydra.main(config_path=str(conf_dir()), config_name="report", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Write the report of `study`; nothing to report prints one message and exits with status 2."""
    sweep, out = (None if cfg.get(k) is None else str(cfg[k]) for k in ("sweep", "out"))
    try:
        report = build_report(cfg.get("tracking_uri"), str(cfg.study), sweep, out, bool(cfg.log_to_parent))
    except HarnessError as exc:
        log.error("report: %s", exc)
        sys.exit(2)
    log.info("%s", summary_text(report))
    log.info("\n%s", to_markdown(report.table))
    log.info("wrote %d file(s) to %s", len(report.files), report.files[0].parent.resolve())


if __name__ == "__main__":
    main()
