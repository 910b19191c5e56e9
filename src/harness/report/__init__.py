"""`python -m harness.report`: the tables and figures of a study, read back from the MLflow store.

Nothing is re-trained: the regime runs of a study (optionally of one sweep) are read with
`mlflow.search_runs`, only FINISHED runs count (failed, killed and still-running ones are left out and
counted), and the seeds of each configuration are aggregated with Student-t intervals and a paired
fine-tuned vs frozen test, so the answer to "does fine-tuning beat feature extraction here?" comes with
its uncertainty. Outputs: CSV (every number, full precision), Markdown and LaTeX (formatted for reading
and pasting), a summary, and figures; the figures are also logged to the sweep's parent run.

    python -m harness.report study=my_study [sweep=<parent run id>] [out=reports/my_study] [tracking_uri=...]

Modules: `runs` (loading from the store), `tables` (aggregation and formatting), `plots` (figures),
`build` (the whole report, its summary and the command).
"""

from harness.report.build import Report, build_report, main, summary_text, write_report
from harness.report.runs import CONFIG_PARAMS, load_curves, load_runs, run_counts
from harness.report.tables import row_keys_of, summarize, to_latex, to_markdown

__all__ = [
    "CONFIG_PARAMS",
    "Report",
    "build_report",
    "load_curves",
    "load_runs",
    "main",
    "row_keys_of",
    "run_counts",
    "summarize",
    "summary_text",
    "to_latex",
    "to_markdown",
    "write_report",
]
