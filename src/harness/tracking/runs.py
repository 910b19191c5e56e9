"""Runs: a job run claimed on its identity, regime runs nested in it, their names and searchable tags."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import reduce
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from harness import record_version
from harness.config.schema import RUN_TAGS
from harness.redaction import redact, redact_data
from harness.tracking.provenance import git_commit, library_versions, package_digest, process_tags
from harness.training import specs

if TYPE_CHECKING:
    from harness.config import Config

log = logging.getLogger("harness.tracking")


# The reaper's mark (harness.jobs.leases): written before the KILLED status and never removed, so a run that carries
# it is not a valid record, whatever status its owner wrote later. And the lease a run is judged by.
KILLED_REASON = "killed_reason"
LEASE_TAG = "lease_s"
# A run the user stopped (Ctrl-C): KILLED as MLflow means it, and says so; not a claim, so the next sweep re-runs it
INTERRUPTED_TAG = "interrupted"


@dataclass(frozen=True)
class FinishedJob:
    """A FINISHED job run found for an identity, with the code version that produced it."""

    run_id: str
    code: str  # the harness package digest recorded on the run
    commit: str

    @classmethod
    def of(cls, run: Any) -> FinishedJob:
        tags = run.data.tags
        return cls(run.info.run_id, tags.get("code_digest", "unknown"), tags.get("git_commit", "unknown"))


def finished_job(experiment_id: str, job_identity: str) -> FinishedJob | None:
    """The newest valid FINISHED job run with this identity (never reaped), if the study already has one."""
    import mlflow

    found = mlflow.MlflowClient().search_runs(
        [experiment_id],
        filter_string=(
            f"tags.job_identity = '{job_identity}' and tags.run_kind = 'job' and attributes.status = 'FINISHED'"
        ),
        max_results=100,
        order_by=["attributes.start_time DESC"],
    )
    valid = [run for run in found if KILLED_REASON not in run.data.tags]
    return FinishedJob.of(valid[0]) if valid else None


def get_run(run_id: str) -> Any:
    """A run as the store has it now (status, tags, lifecycle stage)."""
    import mlflow

    return mlflow.MlflowClient().get_run(run_id)


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
    """On an exception, tag the active run with it and attach the traceback before MLflow marks it FAILED; a
    job that lost its claim ends its run KILLED instead, as the reaper left it (nothing failed), and so does one
    the user interrupted (Ctrl-C or SIGTERM: MLflow's KILLED, tagged with the signal; the same command re-runs it)."""
    import mlflow

    from harness import signals
    from harness.errors import LostLease

    try:
        yield
    except KeyboardInterrupt as exc:
        mlflow.set_tag(INTERRUPTED_TAG, signals.reason(exc))
        mlflow.end_run("KILLED")
        raise
    except LostLease:
        mlflow.end_run("KILLED")
        raise
    except Exception as exc:
        mlflow.set_tag("error", redact(f"{type(exc).__name__}: {exc}")[:4000])
        mlflow.log_text(redact(traceback.format_exc()), "error.txt")
        raise


def run_tags(cfg: Config, job_identity: str, commit: str, kind: str, regime: str | None = None) -> dict[str, str]:
    """The searchable tags of a job or regime run."""
    tags = {
        "run_kind": kind,
        **{tag: str(reduce(getattr, key.split("."), cfg)) for tag, key in RUN_TAGS.items()},  # from the schema
        "job_identity": job_identity,
        "git_commit": commit,
        "code_digest": package_digest(),
        "study": str(cfg.study),
        LEASE_TAG: f"{float(cfg.lease_s):g}",
        **process_tags(),
        **record_version.STAMP,
    }
    if regime is not None:
        tags["regime"] = regime
    return tags


MAX_RUN_NAME = 250  # MLflow's runs.name column: VARCHAR(250) on PostgreSQL (SQLite does not check)


def run_name(overrides: Iterable[str], prefix: str = "") -> str:
    """A run's display name from its overrides: without the keys that do not change results (stores,
    caches), paths shortened to their last part, at most MAX_RUN_NAME characters."""
    from harness.config import RESULT_FREE_KEYS

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


def create_job_run(
    cfg: Config, job_identity: str, name: str, experiment_id: str, extra_tags: dict[str, str] | None = None
) -> str:
    """The job's run, created RUNNING under the sweep's parent run (if any): the claim on its identity."""
    import mlflow
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    tags = {**run_tags(cfg, job_identity, git_commit(), "job"), **(extra_tags or {})}
    if cfg.sweep_run is not None:
        tags[MLFLOW_PARENT_RUN_ID] = cfg.sweep_run
    return mlflow.MlflowClient().create_run(experiment_id, run_name=name[:MAX_RUN_NAME], tags=tags).info.run_id


TARGETS_TAG = "targets"


def targets_tag(cfg: Any) -> dict[str, str]:
    """The hypotheses the config states (`targets`), as the tag recorded when the work starts: on the sweep's
    parent run, or on the job run of a single job. A target edited after results exist shows as another text."""
    from harness.config import plain

    targets = plain(cfg.targets)
    return {TARGETS_TAG: json.dumps(targets, sort_keys=True)} if targets else {}


@contextmanager
def job_run(cfg: Config, run_id: str, overrides: list[str]) -> Iterator[Any]:
    """The claimed job run made active: config and environment logged; FAILED (with the error) on exception."""
    import mlflow

    from harness.config import flatten, to_container

    with mlflow.start_run(run_id=run_id) as run:
        resolved = redact_data(to_container(cfg))
        mlflow.log_params(flatten(resolved))
        mlflow.log_text(OmegaConf.to_yaml(OmegaConf.create(resolved)), "config.yaml")
        mlflow.log_text("\n".join(redact_data(overrides)) + "\n", "overrides.txt")
        commit = run.data.tags.get("git_commit")
        environment = {"versions": library_versions(), "argv": redact_data(sys.argv), "git_commit": commit}
        mlflow.log_dict(environment, "environment.json")
        mlflow.set_tags({f"version.{k}": v for k, v in library_versions().items()})
        if cfg.sweep_run is None:
            mlflow.set_tags(targets_tag(cfg))
        with _record_errors():
            yield run


def regime_run_name(cfg: Config, regime: str) -> str:
    """What a regime run is, readable in the runs table: `finetune block5_conv1 lr=1e-05 seed=0` (its learning
    rate key from the regimes' registry; a regime that starts from another names its boundary too)."""
    spec = specs.spec(regime)
    what = f"{spec.lr_key}={reduce(getattr, spec.lr_key.split('.'), cfg)}"  # l2sp.lr: its own node's
    if spec.starts_from is not None:
        what = f"{cfg.unfreeze_at} {what}"
    fraction = f" data_fraction={cfg.data_fraction}" if float(cfg.data_fraction) != 1.0 else ""
    return f"{regime} {cfg.backbone.name} {what}{fraction} seed={cfg.seed}"


@contextmanager
def regime_run(cfg: Config, job_identity: str, regime: str) -> Iterator[Any]:
    """A run nested under the active job run for one regime; params repeated so the UI can compare."""
    import mlflow

    from harness.config import flatten, to_container

    parent = mlflow.active_run()
    assert parent is not None, "a regime run is opened inside its job run"
    with mlflow.start_run(
        experiment_id=parent.info.experiment_id,  # nested runs otherwise land in the default experiment
        run_name=regime_run_name(cfg, regime),
        nested=True,
        tags=run_tags(cfg, job_identity, parent.data.tags.get("git_commit", "unknown"), "regime", regime),
    ) as run:
        mlflow.log_params(flatten(redact_data(to_container(cfg))))
        with _record_errors():
            yield run


# --- runs by id: the sweep's parent run and its ledger, leases, the closing results table ------------


def create_run(experiment_id: str, name: str, tags: dict[str, str]) -> str:
    """A RUNNING run that no `with` block owns (the sweep's parent run): ended by `end_run`."""
    import mlflow

    tags = {**tags, **record_version.STAMP}
    return mlflow.MlflowClient().create_run(experiment_id, run_name=name[:MAX_RUN_NAME], tags=tags).info.run_id


def log_run(
    experiment_id: str,
    name: str,
    tags: dict[str, str],
    params: dict[str, str] | None = None,
    metrics: dict[str, float] | None = None,
    finished: bool = True,
) -> str:
    """A run that records numbers computed elsewhere (a report's summary): created, logged in one batch and, unless
    `finished=False`, ended FINISHED at once (nothing trains in it, so it never holds a lease)."""
    import time

    import mlflow
    from mlflow.entities import Metric, Param

    client = mlflow.MlflowClient()
    tags = {**tags, **record_version.STAMP}
    run_id = client.create_run(experiment_id, run_name=name[:MAX_RUN_NAME], tags=tags).info.run_id
    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, v, now, 0) for k, v in (metrics or {}).items()],
        params=[Param(k, str(v)[:6000]) for k, v in (params or {}).items()],
    )
    if finished:
        client.set_terminated(run_id, "FINISHED")
    return run_id


def set_tag(run_id: str, key: str, value: str) -> None:
    import mlflow

    mlflow.MlflowClient().set_tag(run_id, key, value)


def tags_of(run_id: str) -> dict[str, str]:
    import mlflow

    return dict(mlflow.MlflowClient().get_run(run_id).data.tags)


def experiment_of(run_id: str) -> str:
    import mlflow

    return mlflow.MlflowClient().get_run(run_id).info.experiment_id


def delete_run(run_id: str) -> None:
    """A withdrawn claim (see `harness.jobs.claims.claim`): deleted, so that no one counts it."""
    import mlflow

    mlflow.MlflowClient().delete_run(run_id)


def end_run(run_id: str, status: str) -> None:
    """Mark a run FINISHED, FAILED or KILLED."""
    import mlflow

    mlflow.MlflowClient().set_terminated(run_id, status)


def end_if_running(run_id: str, status: str) -> None:
    """End a run that is still RUNNING (a claim whose job failed before its run was opened); others untouched."""
    import mlflow

    client = mlflow.MlflowClient()
    if client.get_run(run_id).info.status == "RUNNING":
        client.set_terminated(run_id, status)


def find_runs(
    experiment_id: str | list[str], query: str, max_results: int = 1000, newest_first: bool = False
) -> list[Any]:
    """Runs (MLflow `Run` objects: `.info`, `.data.tags`) of the study matching an MLflow filter string."""
    import mlflow

    ids = [experiment_id] if isinstance(experiment_id, str) else list(experiment_id)
    order = ["attributes.start_time DESC"] if newest_first else None
    return mlflow.MlflowClient().search_runs(ids, filter_string=query, max_results=max_results, order_by=order)


def runs_table(experiment_id: str, query: str) -> Any:
    """Matching runs as a pandas DataFrame (`run_id`, `params.*`, `metrics.*`, `tags.*`)."""
    import mlflow

    return mlflow.search_runs([experiment_id], filter_string=query)


def current_uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


def study_runs_table(study: str, uri: str) -> Any:
    """Every run of a study as a pandas DataFrame (MLflow's columns); HarnessError naming the studies that
    exist when this one does not."""
    import mlflow

    from harness.errors import HarnessError

    experiment = mlflow.get_experiment_by_name(study)
    if experiment is None:
        known = sorted(e.name for e in mlflow.search_experiments())
        raise HarnessError(
            f"study {study!r} does not exist in {redact(uri)}; studies there: {', '.join(known) or 'none'}"
        )
    return mlflow.search_runs(experiment_ids=[experiment.experiment_id], max_results=100_000, output_format="pandas")


def metric_history(run_id: str, metric: str) -> list[tuple[int, float]]:
    """Every (step, value) a run logged for `metric`: per-epoch curves."""
    import mlflow

    return [(m.step, m.value) for m in mlflow.MlflowClient().get_metric_history(run_id, metric)]


def load_table(run_id: str, artifact: str) -> Any:
    """A CSV artifact of a run as a pandas DataFrame (the per-image predictions), or None when the run has none."""
    import os

    import mlflow
    import pandas as pd
    from mlflow.exceptions import MlflowException

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per run would bury the report
    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact)
    except (MlflowException, OSError):
        return None
    return pd.read_csv(path)


def attach_files(run_id: str, files: Iterable[Any], artifact_path: str) -> None:
    """Files as artifacts of a run that is not active (a report on the sweep's parent run)."""
    import mlflow

    client = mlflow.MlflowClient()
    for path in files:
        client.log_artifact(run_id, str(path), artifact_path)
