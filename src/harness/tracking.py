"""MLflow bookkeeping: the store, one experiment per study, sweep -> job -> regime nested runs.

Layout of a multirun in the store:

    sweep run  (run_kind=sweep, created by the SweepParentRun Hydra callback before any job)
      job run  (run_kind=job, one per Hydra job: params = flattened resolved config, config artifacts)
        regime run (run_kind=regime, regime=scratch|frozen|finetune: per-epoch metrics, curves, test metrics)

A single (non -m) run has the same job -> regime structure without the sweep run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from omegaconf import DictConfig, OmegaConf

from harness.errors import HarnessError
from harness.identity import package_digest
from harness.paths import project_root

log = logging.getLogger(__name__)

VERSIONED = ("tensorflow", "keras", "mlflow", "hydra-core", "numpy", "pandas")


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
            raise HarnessError(f"tracking_uri={uri!r}: cannot create {db.parent} ({exc})") from exc
        if not os.access(db.parent, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
            raise HarnessError(f"tracking_uri={uri!r}: {db} is not writable")
        _use_wal(db)
    elif urlparse(uri).scheme in ("http", "https"):
        probe_server(uri)
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # the harness says where, once
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
        f"tracking_uri={uri!r}: no MLflow server answers there ({type(error).__name__}: {error}); start one "
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
EXPERIMENT_TAGS = {EXPERIMENT_KIND: MODEL_TRAINING}


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
        if experiment.tags.get(EXPERIMENT_KIND) is None:  # a study from before the tag: the UI needs it too
            mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
        return experiment.experiment_id
    except Exception as exc:
        if isinstance(exc, HarnessError):
            raise
        raise HarnessError(f"tracking_uri={uri!r}: the MLflow store cannot be used ({exc})") from exc


def git_commit() -> str:
    """HEAD of the project checkout, suffixed `-dirty` when tracked files changed; `unknown` outside git."""
    root = project_root()
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def library_versions() -> dict[str, str]:
    """Python and the versions of the libraries that decide a result."""
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def process_tags() -> dict[str, str]:
    """Which process owns a run (see `leases`): host and pid for people, `owner` for the reaper."""
    from harness.leases import owner

    return {"host": socket.gethostname(), "pid": str(os.getpid()), "owner": owner()}


@dataclass(frozen=True)
class FinishedJob:
    """A FINISHED job run found for an identity, with the code version that produced it."""

    run_id: str
    code: str  # the harness package digest recorded on the run
    commit: str


def finished_job(experiment_id: str, job_identity: str) -> FinishedJob | None:
    """The FINISHED job run with this identity, if the study already has one."""
    import mlflow

    found = mlflow.MlflowClient().search_runs(
        [experiment_id],
        filter_string=(
            f"tags.job_identity = '{job_identity}' and tags.run_kind = 'job' and attributes.status = 'FINISHED'"
        ),
        max_results=1,
    )
    if not found:
        return None
    tags = found[0].data.tags
    return FinishedJob(found[0].info.run_id, tags.get("code_digest", "unknown"), tags.get("git_commit", "unknown"))


def last_job_run_id() -> str | None:
    """The job run this process ended last (the regime runs end inside it), for the closing table."""
    import mlflow

    run = mlflow.last_active_run()
    return run.info.run_id if run is not None else None


def run_metric(run_id: str, key: str) -> float | None:
    """A final metric of a recorded run, or None if it has none."""
    import mlflow

    return mlflow.MlflowClient().get_run(run_id).data.metrics.get(key)


@contextmanager
def _record_errors() -> Iterator[None]:
    """On an exception, tag the active run with it and attach the traceback before MLflow marks it FAILED."""
    import mlflow

    try:
        yield
    except Exception as exc:
        mlflow.set_tag("error", f"{type(exc).__name__}: {exc}"[:4000])
        mlflow.log_text(traceback.format_exc(), "error.txt")
        raise


def run_tags(cfg: DictConfig, job_identity: str, commit: str, kind: str, regime: str | None = None) -> dict[str, str]:
    """The searchable tags of a job or regime run."""
    tags = {
        "run_kind": kind,
        "backbone": str(cfg.backbone.name),
        "unfreeze_at": str(cfg.unfreeze_at),
        "lr": str(cfg.lr),
        "data_fraction": str(cfg.data_fraction),
        "seed": str(cfg.seed),
        "job_identity": job_identity,
        "git_commit": commit,
        "code_digest": package_digest(),
        "study": str(cfg.study),
        **process_tags(),
    }
    if regime is not None:
        tags["regime"] = regime
    return tags


MAX_RUN_NAME = 250  # MLflow's runs.name column: VARCHAR(250) on PostgreSQL (SQLite does not check)


def run_name(overrides: Iterable[str], prefix: str = "") -> str:
    """A run's display name from its overrides: without the keys that do not change results (stores,
    caches), paths shortened to their last part, at most MAX_RUN_NAME characters."""
    from harness.identity import RESULT_FREE_KEYS

    parts = []
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+~") in RESULT_FREE_KEYS:
            continue
        if "/" in value and not value.startswith("["):
            value = "…/" + value.rstrip("/").rsplit("/", 1)[-1]
        parts.append(f"{key}={value}" if _ else override)
    name = " ".join([prefix, *parts] if prefix else parts) or prefix or "defaults"
    return name if len(name) <= MAX_RUN_NAME else name[: MAX_RUN_NAME - 1] + "…"


def create_job_run(cfg: DictConfig, job_identity: str, name: str, experiment_id: str) -> str:
    """The job's run, created RUNNING under the sweep's parent run (if any): the claim on its identity."""
    import mlflow

    tags = run_tags(cfg, job_identity, git_commit(), "job")
    if cfg.sweep_run is not None:
        tags["mlflow.parentRunId"] = cfg.sweep_run
    return mlflow.MlflowClient().create_run(experiment_id, run_name=name[:MAX_RUN_NAME], tags=tags).info.run_id


@contextmanager
def job_run(cfg: DictConfig, run_id: str, overrides: list[str]) -> Iterator[Any]:
    """The claimed job run made active: config and environment logged; FAILED (with the error) on exception."""
    import mlflow

    from harness.config import flatten, to_container
    from harness.leases import heartbeat

    try:
        with mlflow.start_run(run_id=run_id) as run:
            resolved = to_container(cfg)
            mlflow.log_params(flatten(resolved))
            mlflow.log_text(OmegaConf.to_yaml(OmegaConf.create(resolved)), "config.yaml")
            mlflow.log_text("\n".join(overrides) + "\n", "overrides.txt")
            commit = run.data.tags.get("git_commit")
            environment = {"versions": library_versions(), "argv": sys.argv, "git_commit": commit}
            mlflow.log_dict(environment, "environment.json")
            mlflow.set_tags({f"version.{k}": v for k, v in library_versions().items()})
            with _record_errors():
                yield run
    finally:
        heartbeat.release(run_id)


def regime_run_name(cfg: DictConfig, regime: str) -> str:
    """What a regime run is, readable in the runs table: `finetune block5_conv1 lr=1e-05 seed=0`."""
    what = {
        "scratch": f"head_lr={cfg.head_lr}",  # scratch trains everything at the head's rate
        "frozen": f"head_lr={cfg.head_lr}",
        "finetune": f"{cfg.unfreeze_at} lr={cfg.lr}",
    }[regime]
    fraction = f" data_fraction={cfg.data_fraction}" if float(cfg.data_fraction) != 1.0 else ""
    return f"{regime} {cfg.backbone.name} {what}{fraction} seed={cfg.seed}"


@contextmanager
def regime_run(cfg: DictConfig, job_identity: str, regime: str) -> Iterator[Any]:
    """A run nested under the active job run for one regime; params repeated so the UI can compare."""
    import mlflow

    from harness.config import flatten, to_container
    from harness.leases import heartbeat

    parent = mlflow.active_run()
    with mlflow.start_run(
        experiment_id=parent.info.experiment_id,  # nested runs otherwise land in the default experiment
        run_name=regime_run_name(cfg, regime),
        nested=True,
        tags=run_tags(cfg, job_identity, parent.data.tags.get("git_commit", "unknown"), "regime", regime),
    ) as run:
        heartbeat.hold(run.info.run_id, cfg.heartbeat_s)
        try:
            mlflow.log_params(flatten(to_container(cfg)))
            with _record_errors():
                yield run
        finally:
            heartbeat.release(run.info.run_id)


def epoch_logger():
    """A Keras callback logging loss/acc/val_loss/val_acc per epoch to the active run (step = epoch)."""
    import keras
    import mlflow

    from harness.leases import heartbeat

    class MlflowEpochMetrics(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            metrics = {k: float(v) for k, v in (logs or {}).items() if k in ("loss", "acc", "val_loss", "val_acc")}
            mlflow.log_metrics(metrics, step=epoch)
            heartbeat.beat()

    return MlflowEpochMetrics()


def log_history(history: Mapping[str, list[float]], first_epoch: int = 0) -> None:
    """Per-epoch metrics of a phase trained earlier (a reused head phase) into the active run, steps as then."""
    import time

    import mlflow
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [
        Metric(key, float(value), now, first_epoch + step)
        for key, values in history.items()
        for step, value in enumerate(values)
    ]
    mlflow.MlflowClient().log_batch(mlflow.active_run().info.run_id, metrics=metrics)


def log_datasets(root: Path, splits: Mapping[str, Any], class_names: list[str], identities: Mapping[str, str]) -> None:
    """Each split as an MLflow dataset input of the active run (the UI's Dataset column: name, digest,
    source, size) and the training files (path, class, sha256) as the artifact data/train_files.csv."""
    import warnings

    import mlflow
    import pandas as pd
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    with warnings.catch_warnings():
        # MLflow registers its local-artifact source twice (file and local schemes) and warns that a path
        # "can be interpreted in multiple ways" although both readings are the same class: resolved once here
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
        source = resolve_dataset_source(str(root))
    frames = {}
    for split, part in splits.items():
        frames[split] = pd.DataFrame(
            {
                "file": [
                    str(Path(f).relative_to(root)) if Path(f).is_relative_to(root) else str(f) for f in part.files
                ],
                "label": [class_names[i] for i in part.labels],
                "sha256": list(part.digests),
            }
        )
        dataset = mlflow.data.from_pandas(
            frames[split], source=source, targets="label", name=f"{root.name}/{split}", digest=identities[split][:16]
        )
        _log_input(dataset, split)
    if "train" in frames:
        mlflow.log_text(frames["train"].to_csv(index=False), "data/train_files.csv")


def _log_input(dataset: Any, split: str) -> None:
    """`mlflow.log_input`, once more when it loses a race: MLflow's SQL store looks a dataset up and then
    inserts it, so parallel jobs logging the same new split collide on the (experiment, name, digest) key;
    the retry finds the row the winner wrote and only links it to this run."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mlflow.log_input(dataset, context=split)
    except MlflowException:
        time.sleep(0.2)
        mlflow.log_input(dataset, context=split)


def log_result_metrics(values: Mapping[str, float]) -> None:
    """Final metrics of the active run."""
    import mlflow

    mlflow.log_metrics(dict(values))
