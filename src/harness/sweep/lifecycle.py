"""A multirun as a whole: every job checked before any trains, a parent run, a ledger, a summary.

The harness sweeper (`hydra/sweeper=harness`, the default in conf/config.yaml) calls these in the
launching process:

- `expand` turns the command line into one override list per job, as Hydra's basic sweeper does
  (cartesian product of the comma lists, in the same order);
- `start` composes every job's config and checks it (config values, data folder, weights, feature
  memory), so a bad value in the fifth job stops the sweep before the first trains, with nothing
  recorded; `dry_run=true` prints the plan and stops there. Otherwise it marks runs left RUNNING by
  dead processes as KILLED and creates the sweep's parent run, whose id each job receives as the
  `sweep_run=` override (an override travels through every launcher, to other machines too);
- each job writes its outcome as a tag on the parent run: the ledger (`harness.sweep.ledger`);
- `finish` reads the ledger, counts jobs that wrote nothing (their process died) as missing, prints
  the summary and gives the exit status: non-zero unless every job finished or was already done
  (failed, missing, lost its lease, or left running elsewhere: the study is not complete).
"""

from __future__ import annotations

import itertools
import logging
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlparse

from hydra.core.override_parser.types import Override
from omegaconf import DictConfig

from harness import tracking
from harness.config import load
from harness.errors import HarnessError
from harness.jobs import leases
from harness.redaction import redact
from harness.sweep.ledger import Entry, entries, key

log = logging.getLogger(__name__)

SWEEP_RUN_KEY = "sweep_run"


def expand(overrides: Sequence[Override]) -> list[list[str]]:
    """One override list per job: the cartesian product of every key's values, keys in command-line order."""
    choices: dict[str, list[str]] = {}
    for override in overrides:
        key = override.get_key_element()
        if override.is_sweep_override():
            if not override.is_discrete_sweep():
                raise HarnessError(
                    f"{key}: the harness sweeper expands comma lists, range() and choice(), not "
                    f"{override.value_type.name if override.value_type else 'this'} sweeps; use hydra/sweeper=<plugin>"
                )
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            choices[key] = [f"{key}={override.get_value_element_as_str()}"]
    return [list(job) for job in itertools.product(*choices.values())]


def check_jobs(jobs: list[tuple[list[str], DictConfig]], check: Callable[[Any], Any]) -> tuple[list[str], int]:
    """Problems of every job, each prefixed with the overrides of the jobs that have it (one entry per
    distinct problem: an unreachable download is said once, not once per job), and how many jobs failed."""
    by_problem: dict[str, list[str]] = {}
    for overrides, cfg in jobs:
        try:
            check(cfg)
        except HarnessError as exc:
            by_problem.setdefault(str(exc), []).append(f"[{' '.join(overrides)}]")
    problems = [
        f"job {which[0]}: {problem}" if len(which) == 1 else f"jobs {', '.join(which)}: {problem}"
        for problem, which in by_problem.items()
    ]
    return problems, sum(len(which) for which in by_problem.values())


# Launchers whose jobs run on other machines: they need a store every node reaches (not a file on this one)
MULTI_NODE_LAUNCHERS = ("RayLauncher", "SlurmLauncher")


def check_shared_store(config: DictConfig) -> None:
    """Refuse a multi-node launcher (Ray, SLURM) with a store that is a local file: each worker would write its
    own copy on its own disk (or one file over a network filesystem that SQLite cannot lock)."""
    launcher = str(config.hydra.launcher.get("_target_", ""))
    uri = tracking.resolve_tracking_uri(config.tracking_uri)
    shared = urlparse(uri).scheme.split("+")[0] in ("http", "https", "postgresql", "mysql", "mssql")
    if shared or not any(name in launcher for name in MULTI_NODE_LAUNCHERS):
        return
    raise HarnessError(
        f"hydra/launcher={config.hydra.runtime.choices.get('hydra/launcher')} runs jobs on other machines, but the "
        f"MLflow store {redact(uri)!r} (from tracking_uri, else $MLFLOW_TRACKING_URI, else the default) is a "
        "file on this one: each node would write a store of its own. Give every job one store: an MLflow server "
        "(tracking_uri=http://<host>:5000, see the README's 'Run on a cluster') or a database "
        "(tracking_uri=postgresql+psycopg2://...)"
    )


def start(
    config: DictConfig, jobs: list[tuple[list[str], DictConfig]], preflight: Callable[[], None] | None = None
) -> str:
    """Check every job, then the launcher (`preflight`: e.g. that a Ray head answers), then open the sweep's
    parent run and return its id. Exits 2 on bad input, 0 after a dry run."""
    from harness.jobs import checks, inputs, plan

    # config values and data folders first (no TensorFlow needed): a typo is reported in a second or two;
    # then the weights and feature memory, which build models
    try:
        check_shared_store(config)
    except HarnessError as exc:
        log.error("sweep: %s; nothing was started", exc)
        sys.exit(2)
    problems, failing = check_jobs(jobs, inputs.prepare)
    if not problems:
        problems, failing = check_jobs(jobs, checks.check)
    if problems:
        log.error(
            "sweep: %d of %d job(s) cannot run; nothing was started:\n%s", failing, len(jobs), "\n".join(problems)
        )
        sys.exit(2)
    log.info("sweep: %d job(s), all inputs checked", len(jobs))
    if config.dry_run:
        plan.print_plan([(overrides, load(cfg)) for overrides, cfg in jobs])
        sys.exit(0)
    try:
        if preflight is not None:
            preflight()
        uri = tracking.connect(config.tracking_uri)
        experiment_id = tracking.ensure_experiment(str(config.study), uri)
    except HarnessError as exc:
        log.error("%s", exc)
        sys.exit(2)
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE  # after the checks: a typo is refused without MLflow

    leases.reap(experiment_id, config.lease_s)
    overrides = redact(" ".join(config.hydra.overrides.task))
    command = redact(shlex.join(["python", "-m", "harness", *sys.argv[1:]]))
    run_id = tracking.create_run(
        experiment_id,
        tracking.run_name(config.hydra.overrides.task, prefix="sweep"),
        tags={
            "run_kind": "sweep",
            "sweep_overrides": overrides,
            "command": command,
            # the run's description in the MLflow UI
            MLFLOW_RUN_NOTE: f"Sweep of {len(jobs)} job(s), started with:\n\n    {command}\n",
            "n_jobs": str(len(jobs)),
            "git_commit": tracking.git_commit(),
            tracking.LEASE_TAG: f"{float(config.lease_s):g}",
            **tracking.targets_tag(config),
            **tracking.process_tags(),
        },
    )
    leases.heartbeat.hold(run_id, config.heartbeat_s)
    log.info("sweep: MLflow parent run %s in study %r (%s)", run_id, config.study, redact(uri))
    return run_id


def record(sweep_run: str | None, job_num: int, entry: Entry) -> None:
    """Write one job's outcome to the sweep ledger (a tag on the parent run); no-op outside a sweep."""
    if sweep_run is None:
        return
    tracking.set_tag(sweep_run, key(job_num), redact(entry.to_tag()))


def interrupt(run_id: str, jobs: Sequence[Sequence[str]], reason: str) -> None:
    """Close the parent run of a sweep stopped by Ctrl-C or SIGTERM (`reason`) as KILLED, saying how far it got;
    the job that was training ended its own runs KILLED, so the same command resumes without waiting for a lease."""
    written = entries(tracking.tags_of(run_id))
    leases.heartbeat.release(run_id)
    leases.end_interrupted_jobs(tracking.get_run(run_id), reason)
    tracking.set_tag(run_id, tracking.INTERRUPTED_TAG, reason)
    tracking.end_run(run_id, "KILLED")
    log.error(
        "sweep: interrupted after %d of %d job(s) (%s); its parent run %s is KILLED. The same command resumes: "
        "finished jobs are skipped",
        len(written),
        len(jobs),
        ", ".join(f"{n} {e.outcome}" for n, e in sorted(written.items())) or "none recorded",
        run_id,
    )


def finish(run_id: str, jobs: Sequence[Sequence[str]]) -> int:
    """Close the parent run, print the summary and the results table; the exit status: 1 unless every job
    finished or was already done."""
    n_jobs = len(jobs)
    written = entries(tracking.tags_of(run_id))
    by_outcome: dict[str, list[tuple[int, Entry]]] = {}
    for num, entry in written.items():
        by_outcome.setdefault(entry.outcome, []).append((num, entry))
    missing = [i for i in range(n_jobs) if i not in written]
    failed, lost, elsewhere = (by_outcome.get(k, []) for k in ("failed", "lost", "elsewhere"))
    bad = bool(failed or missing or lost or elsewhere)
    leases.heartbeat.release(run_id)
    if missing:
        tracking.set_tag(run_id, "missing_jobs", " ".join(map(str, missing)))
    tracking.end_run(run_id, "FAILED" if bad else "FINISHED")
    log.info(
        "sweep summary: %d finished, %d skipped (already FINISHED in the study), %d running elsewhere, "
        "%d lost their lease, %d failed, %d missing",
        len(by_outcome.get("finished", [])),
        len(by_outcome.get("skipped", [])),
        len(elsewhere),
        len(lost),
        len(failed),
        len(missing),
    )
    for num, entry in failed:
        log.error("sweep: job %d failed: %s", num, entry.detail)
    for num, entry in lost:
        log.error("sweep: job %d lost its lease and stopped (%s); its run is KILLED", num, entry.detail)
    if elsewhere:
        log.error(
            "sweep: job(s) %s are running elsewhere (held by run(s) %s): this sweep did not see them finish; run the "
            "same command again once they end, or with wait_for_others=true to wait for them",
            ", ".join(str(num) for num, _ in elsewhere),
            ", ".join(sorted({str(e.run_id) for _, e in elsewhere})),
        )
    if missing:
        log.error(
            "sweep: job(s) %s recorded no outcome: their process died (out of memory, a killed worker or node); "
            "run the same command again to run them",
            ", ".join(map(str, missing)),
        )
    from harness.sweep import console  # pandas: only once the sweep is over

    experiment_id = tracking.experiment_of(run_id)
    results = [e.run_id for k in ("finished", "skipped") for _, e in by_outcome.get(k, []) if e.run_id]
    keys = console.swept_keys(jobs, ignore=[SWEEP_RUN_KEY])
    console.print_results(experiment_id, tracking.current_uri(), results, keys)
    return 1 if bad else 0
