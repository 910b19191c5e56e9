"""`python -m harness.report`: the tables and figures of a study, read back from the MLflow store.

Nothing is re-trained: the regime runs of a study (optionally of one sweep) are read with
`mlflow.search_runs`, only FINISHED runs count (failed, killed and still-running ones are left out and
counted), and the seeds of each configuration are aggregated with intervals that count the seeds and the
test images together (the crossed seeds x images t, calibrated at 3, 5 and 10 seeds) and paired tests between
regimes, so the answer to "does fine-tuning beat feature extraction here?" comes with its uncertainty.
Outputs: CSV (every number, full precision), Markdown and LaTeX (formatted for reading and pasting), a summary,
and figures; the figures are also logged to the sweep's parent run.

    python -m harness.report study=my_study [sweep=<parent run id>] [out=reports/my_study] [tracking_uri=...]

The Markdown and LaTeX tables are in long form (one row per configuration x regime, the varying keys as
columns, the constant ones in a caption line, at most 12 columns); results.csv keeps the wide table.

    python -m harness.report ... readme=experiments/x/README.md        # also splice results.md into the README
    python -m harness.report from_csv=experiments/x/results/results.csv readme=experiments/x/README.md

`from_csv=` re-renders results.md and results.tex beside a recorded results.csv (no store needed); every report
also writes correctness.csv.gz, each run's outcome on each test image, for a later re-analysis without the store.

Modules: `runs` (loading from the store), `tables` (aggregation, the wide table and its keys), `evidence`
(per-image predictions: comparisons, per class, confusion), `stats`, `calibration` (simulated studies that check
the intervals), `targets`, `analysis` (all of it together),
`render` (Markdown, LaTeX), `plots` (figures), `summary_runs` (aggregates as MLflow runs), `readme` (the README
splice), `build` (the whole report and the command).
"""

from harness.report.analysis import read_correctness
from harness.report.build import Report, build_report, main, render_from_csv, summary_text, write_report
from harness.report.readme import check_readme, splice
from harness.report.render import results_section, to_latex, to_markdown
from harness.report.runs import CONFIG_PARAMS, load_curves, load_runs, run_counts
from harness.report.tables import read_table, row_keys_of, split_keys, summarize

__all__ = [
    "CONFIG_PARAMS",
    "Report",
    "build_report",
    "check_readme",
    "load_curves",
    "load_runs",
    "results_section",
    "main",
    "read_correctness",
    "read_table",
    "render_from_csv",
    "row_keys_of",
    "run_counts",
    "splice",
    "split_keys",
    "summarize",
    "summary_text",
    "to_latex",
    "to_markdown",
    "write_report",
]
