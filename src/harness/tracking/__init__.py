"""MLflow bookkeeping, the one place the harness calls MLflow: the store, one experiment per study,
sweep -> job -> regime nested runs, and what each run records.

Layout of a multirun in the store:

    sweep run  (run_kind=sweep, created by the harness sweeper before any job; its tags are the ledger)
      job run  (run_kind=job, one per Hydra job: params = flattened resolved config, config artifacts)
        regime run (run_kind=regime, regime=scratch|frozen|finetune: per-epoch metrics, curves, test metrics)

A single (non -m) run has the same job -> regime structure without the sweep run.
"""

from harness.tracking.provenance import git_commit, library_versions, process_tags
from harness.tracking.records import (
    epoch_logger,
    log_datasets,
    log_figure,
    log_history,
    log_keras_model,
    log_params,
    log_result_metrics,
    set_tags,
)
from harness.tracking.runs import (
    MAX_RUN_NAME,
    FinishedJob,
    attach_files,
    create_job_run,
    create_run,
    current_uri,
    delete_run,
    end_run,
    experiment_of,
    find_runs,
    finished_job,
    job_run,
    last_job_run_id,
    metric_history,
    regime_run,
    regime_run_name,
    run_metric,
    run_name,
    run_tags,
    runs_table,
    set_tag,
    study_runs_table,
    tags_of,
)
from harness.tracking.store import (
    EXPERIMENT_KIND,
    MODEL_TRAINING,
    artifact_location,
    connect,
    default_tracking_uri,
    ensure_experiment,
    find_experiment,
    open_existing,
    probe_server,
    resolve_tracking_uri,
)

__all__ = [
    "EXPERIMENT_KIND",
    "MAX_RUN_NAME",
    "MODEL_TRAINING",
    "FinishedJob",
    "artifact_location",
    "attach_files",
    "connect",
    "create_job_run",
    "create_run",
    "current_uri",
    "default_tracking_uri",
    "delete_run",
    "end_run",
    "ensure_experiment",
    "epoch_logger",
    "experiment_of",
    "find_experiment",
    "find_runs",
    "finished_job",
    "git_commit",
    "job_run",
    "last_job_run_id",
    "library_versions",
    "log_datasets",
    "log_figure",
    "log_history",
    "log_keras_model",
    "log_params",
    "log_result_metrics",
    "metric_history",
    "open_existing",
    "probe_server",
    "process_tags",
    "regime_run",
    "regime_run_name",
    "resolve_tracking_uri",
    "run_metric",
    "run_name",
    "run_tags",
    "runs_table",
    "set_tag",
    "set_tags",
    "study_runs_table",
    "tags_of",
]
