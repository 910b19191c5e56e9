"""The MLflow store: where it is, that it answers and can be written, one experiment per study."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from urllib.parse import urlparse

from harness import record_version
from harness.errors import HarnessError
from harness.paths import project_root
from harness.redaction import redact

log = logging.getLogger("harness.tracking")


def default_tracking_uri() -> str:
    """SQLite database inside `<project>/mlruns/`, as an absolute URI."""
    return f"sqlite:///{project_root() / 'mlruns' / 'mlflow.db'}"


def resolve_tracking_uri(configured: str | None) -> str:
    """`tracking_uri=` wins, then $MLFLOW_TRACKING_URI, then the project's SQLite store."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :])


def _use_wal(db: Path) -> None:
    """Write-ahead logging: parallel jobs can read while one writes, fewer 'database is locked' errors.

    The mode is stored in the database file, so this costs one PRAGMA per job.
    """
    import sqlite3

    with contextlib.closing(sqlite3.connect(db, timeout=60)) as con:
        con.execute("PRAGMA journal_mode=WAL")


def artifact_location(uri: str) -> str | None:
    """Artifacts beside a SQLite database (`<db dir>/artifacts`); a server decides its own."""
    db = _sqlite_path(uri)
    return (db.parent / "artifacts").as_uri() if db else None


def connect(configured_uri: str | None) -> str:
    """Point MLflow at the store, checking it can be written before any training starts."""
    import mlflow

    uri = resolve_tracking_uri(configured_uri)
    db = _sqlite_path(uri)
    for chatty in ("mlflow.store.db.utils", "alembic"):  # "Creating initial MLflow database tables..."
        logging.getLogger(chatty).setLevel(logging.WARNING)
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HarnessError(f"tracking_uri={redact(uri)!r}: cannot create {db.parent} ({exc})") from exc
        if not os.access(db.parent, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
            raise HarnessError(f"tracking_uri={redact(uri)!r}: {db} is not writable")
        _use_wal(db)
    elif urlparse(uri).scheme in ("http", "https"):
        probe_server(uri)
        # the harness says where, once, and masked (MLflow's own "View run at" lines would show credentials)
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        # Then ride out a server that is briefly away (a restart, a network blip) with MLflow's own
        # bounded retries: 7 tries backing off 2, 4, ... up to 120 s (about 4 minutes in all), each
        # logged by urllib3 as "Retrying (...)". A server that never answered failed above, at once.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    mlflow.set_tracking_uri(uri)
    return uri


def probe_server(uri: str, attempts: int = 3, timeout_s: float = 3.0) -> None:
    """Fail fast, before any job, when no MLflow server answers at `uri` (its /health endpoint)."""
    import requests

    error: Exception | None = None
    for attempt in range(attempts):
        try:
            response = requests.get(f"{uri.rstrip('/')}/health", timeout=timeout_s)
            if response.ok:
                return
            error = RuntimeError(f"HTTP {response.status_code} from /health")
        except requests.RequestException as exc:
            error = exc
        time.sleep(0.5 * (attempt + 1))
    raise HarnessError(
        f"tracking_uri={redact(uri)!r}: no MLflow server answers there ({type(error).__name__}: "
        f"{redact(str(error))}); start one "
        "(`mlflow server --host ... --port ...`, see the README's 'Run on a cluster') or use a local store "
        "(tracking_uri=sqlite:///path/to/mlflow.db)"
    )


def find_experiment(study: str) -> str | None:
    """The experiment id of `study`, or None if the store has none."""
    import mlflow

    experiment = mlflow.get_experiment_by_name(study)
    return experiment.experiment_id if experiment else None


# MLflow 3's UI opens an experiment by its kind: without this tag a study lands on the GenAI overview
# (traces) instead of the training runs table.
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"


EXPERIMENT_TAGS = {EXPERIMENT_KIND: MODEL_TRAINING, **record_version.STAMP}


def ensure_experiment(study: str, uri: str) -> str:
    """The experiment id of `study`, created on first use with artifacts kept beside the store."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        experiment = mlflow.get_experiment_by_name(study)
        if experiment is None:
            try:
                return mlflow.create_experiment(study, artifact_location=artifact_location(uri), tags=EXPERIMENT_TAGS)
            except MlflowException as exc:  # two sweeps starting a new study at once: the other one created it
                experiment = mlflow.get_experiment_by_name(study)
                if exc.error_code != "RESOURCE_ALREADY_EXISTS" or experiment is None:
                    raise
        for name, value in record_version.missing_experiment_tags(experiment.tags, EXPERIMENT_TAGS).items():
            mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, name, value)
        return experiment.experiment_id
    except Exception as exc:
        if isinstance(exc, HarnessError):
            raise
        raise HarnessError(
            f"tracking_uri={redact(uri)!r}: the MLflow store cannot be used ({redact(str(exc))})"
        ) from exc


def open_existing(configured_uri: str | None) -> str:
    """Point MLflow at a store that must already exist: a report never creates one (a typo in the path
    would otherwise read as 'no runs')."""
    import mlflow

    uri = resolve_tracking_uri(configured_uri)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # its URLs would show credentials
    db = _sqlite_path(uri)
    if db is not None and not db.is_file():
        raise HarnessError(
            f"no MLflow store at {db} (tracking_uri={redact(uri)!r}): run a study first or fix tracking_uri="
        )
    mlflow.set_tracking_uri(uri)
    return uri
