"""Building a report end to end, its summary, and `python -m harness.report`."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from harness import record_version, tracking
from harness.errors import HarnessError
from harness.redaction import install_log_filter, redact
from harness.report import analysis, evidence
from harness.report.analysis import Analysis, sections
from harness.report.config import ReportConfig
from harness.report.plots import write_figures
from harness.report.readme import check_readme, splice
from harness.report.render import to_latex, to_markdown
from harness.report.runs import finished_runs, ledger_counts, load_curves, load_runs, row_keys, run_counts
from harness.report.summary_runs import log_summary_runs
from harness.report.tables import read_table, row_keys_of, summarize
from harness.tracking import resolve_tracking_uri

log = logging.getLogger("harness.report")


# ------------------------------------------------------------------------------------------- the report


@dataclass
class Report:
    """What `build_report` produced: the summary table, the analysis, the counts and the files written."""

    table: pd.DataFrame
    analysis: Analysis
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
    analysis: Analysis,
    finished: pd.DataFrame,
    curves: pd.DataFrame,
    out: Path | str,
    summary: dict[str, Any] | None = None,
) -> list[Path]:
    """results.csv (every number), the analysis' CSVs, results.md, results.tex, the figures and summary.json (with
    the folder's record version, which `analysis.read` goes by)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "results.csv", index=False)
    files = [out / "results.csv", *analysis.write(out), *write_tables(table, analysis, out)]
    files += write_figures(table, analysis.comparisons, finished, curves, out)
    files.append(out / "summary.json")
    summary = {**(summary or {}), record_version.TAG: record_version.CURRENT, "files": [p.name for p in files]}
    files[-1].write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return files


def write_tables(table: pd.DataFrame, analysis: Analysis, out: Path) -> list[Path]:
    """results.md and results.tex: the tables as people read and paste them (the CSVs keep every number)."""
    files = [out / "results.md", out / "results.tex"]
    parts = sections(table, analysis)
    files[0].write_text(to_markdown(parts), encoding="utf-8")
    files[1].write_text(to_latex(parts, label=out.name), encoding="utf-8")
    return files


def render_from_csv(csv: Path | str) -> list[Path]:
    """Rewrite results.md and results.tex beside a recorded results.csv, from its numbers alone.

    For reports whose MLflow store is not at hand: the tables are re-rendered, nothing is recomputed.
    """
    csv = Path(csv)
    table = read_table(csv)
    return write_tables(table, analysis.read(csv.parent, table), csv.parent)


def log_to_run(run_id: str, files: Iterable[Path], artifact_path: str = "report") -> None:
    """Attach the report's files to an MLflow run (the sweep's parent run), under `report/`."""
    tracking.attach_files(run_id, files, artifact_path)


def build_report(
    tracking_uri: str | None,
    study: str,
    sweep: str | None = None,
    out: Path | str | None = None,
    log_to_parent: bool = True,
    adjust: str = "holm",
    summary_runs: bool = True,
    compare: str | None = None,
    compare_baseline: str | None = None,
) -> Report:
    """Load, summarize, write and (when the runs belong to one sweep) log the report of a study.

    Raises HarnessError when there is nothing to report: no store, no such study or sweep, or no
    FINISHED regime run (the message says how many runs were left out and why), and when `compare` names a key
    that does not vary (or `compare_baseline` a value it does not take), before any file is written.
    """
    runs = load_runs(tracking_uri, study, sweep)
    counts = run_counts(runs)
    where = f"study {study!r}" + (f", sweep {sweep}" if sweep else "")
    if counts["used_regime_runs"] == 0:
        raise HarnessError(f"{where} has no finished runs to report ({_left_out_text(counts)})")
    finished = finished_runs(runs)
    curves = load_curves(finished)
    predictions = evidence.load_predictions(finished)
    table = summarize(runs, curves, evidence.regime_intervals(finished, predictions, row_keys(finished)))
    found = analysis.analyse(runs, finished, table, adjust, compare, compare_baseline, predictions)
    parent = parent_run(runs, finished, sweep)
    summary = {
        "study": study,
        "tracking_uri": redact(resolve_tracking_uri(tracking_uri)),
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
    files = write_report(table, found, finished, curves, out or Path("reports") / study, summary)
    if parent is not None and log_to_parent:
        log_to_run(parent, files)
    if summary_runs:
        summary["summary_run"] = log_summary_runs(runs, table, found, study, sweep)
    return Report(table, found, summary, files)


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


@hydra.main(config_path="../conf", config_name="report", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Write the report of `study` (or re-render `from_csv`), and splice its table into `readme`.

    Any error (nothing to report, no README or no markers in it) prints one message and exits with
    status 2; the README is checked before anything is written, so a failed run leaves every file as it was.
    """
    install_log_filter()
    c: ReportConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    readme, from_csv = c.readme, c.from_csv
    try:
        folder = Path(from_csv).parent if from_csv else Path(c.out or Path("reports") / c.study)
        text = check_readme(readme, folder / "results.md") if readme else None
        if from_csv:
            files = render_from_csv(from_csv)
            log.info("\n%s", files[0].read_text(encoding="utf-8"))
        else:
            report = build_report(
                c.tracking_uri,
                c.study,
                c.sweep,
                c.out,
                c.log_to_parent,
                str(c.adjust),
                c.summary_runs,
                c.compare,
                c.compare_baseline,
            )
            files = report.files
            log.info("%s", summary_text(report))
            log.info("\n%s", files[0].parent.joinpath("results.md").read_text(encoding="utf-8"))
        if readme and text is not None:
            Path(readme).write_text(splice(text, Path(readme), folder / "results.md"), encoding="utf-8")
            log.info("spliced %s into %s", files[0].parent / "results.md", readme)
    except HarnessError as exc:
        log.error("report: %s", exc)
        sys.exit(2)
    log.info("wrote %d file(s) to %s", len(files), files[0].parent.resolve())
