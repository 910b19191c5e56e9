"""A multirun as a whole: every job checked before any trains, a parent run, a ledger, a summary.

The harness sweeper (`hydra/sweeper=harness`, the default in harness/conf/config.yaml) calls these in the
launching process:

- `expand` turns the command line into one override list per job, as Hydra's basic sweeper does
  (cartesian product of the comma lists, in the same order);
- `start` composes every job's config and checks it (config values, data folder, weights, feature
  memory), so a bad value in the fifth job stops the sweep before the first trains, with nothing
  recorded; `dry_run=true` prints the plan and stops there. Otherwise it marks runs left RUNNING by
  dead processes as KILLED and creates the sweep's parent run, whose id each job receives as the
  `sweep_run=` override (an override travels through every launcher, to other machines too);
- each job writes its outcome (finished / skipped / failed) as a tag on the parent run: the ledger;
- `finish` reads the ledger, counts jobs that wrote nothing (their process died) as missing, prints
  the summary and gives the exit status: non-zero if any job failed or went missing.
"""

from __future__ import annotations

import itertools
import logging
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import Any

from hydra.core.override_parser.types import Override
from omegaconf import DictConfig

from harness import leases, tracking
from harness.errors import HarnessError

log = logging.getLogger(__name__)

LEDGER_PREFIX = "job."
OUTCOMES = ("finished", "skipped", "elsewhere", "failed")
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


def check_jobs(jobs: list[tuple[list[str], DictConfig]], check: Callable[[DictConfig], Any]) -> tuple[list[str], int]:
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


def start(
    config: DictConfig, jobs: list[tuple[list[str], DictConfig]], preflight: Callable[[], None] | None = None
) -> str:
    """Check every job, then the launcher (`preflight`: e.g. that a Ray head answers), then open the sweep's
    parent run and return its id. Exits 2 on bad input, 0 after a dry run."""
    from harness import inputs, plan

    # config values and data folders first (no TensorFlow needed): a typo is reported in a second or two;
    # then the weights and feature memory, which build models
    problems, failing = check_jobs(jobs, inputs.prepare)
    if not problems:
        problems, failing = check_jobs(jobs, inputs.check)
    if problems:
        log.error(
            "sweep: %d of %d job(s) cannot run; nothing was started:\n%s", failing, len(jobs), "\n".join(problems)
        )
        sys.exit(2)
    log.info("sweep: %d job(s), all inputs checked", len(jobs))
    if config.dry_run:
        plan.print_plan(jobs)
        sys.exit(0)
    try:
        if preflight is not None:
            preflight()
        uri = tracking.connect(config.tracking_uri)
        experiment_id = tracking.ensure_experiment(str(config.study), uri)
    except HarnessError as exc:
        log.error("%s", exc)
        sys.exit(2)
    leases.reap(experiment_id, config.lease_s)
    overrides = " ".join(config.hydra.overrides.task)
    command = shlex.join(["python", "-m", "harness", *sys.argv[1:]])
    run_id = tracking.create_run(
        experiment_id,
        tracking.run_name(config.hydra.overrides.task, prefix="sweep"),
        tags={
            "run_kind": "sweep",
            "sweep_overrides": overrides,
            "command": command,
            # the run's description in the MLflow UI
            "mlflow.note.content": f"Sweep of {len(jobs)} job(s), started with:\n\n    {command}\n",
            "n_jobs": str(len(jobs)),
            "git_commit": tracking.git_commit(),
            **tracking.process_tags(),
        },
    )
    leases.heartbeat.hold(run_id, config.heartbeat_s)
    log.info("sweep: MLflow parent run %s in study %r (%s)", run_id, config.study, uri)
    return run_id


def record(sweep_run: str | None, job_num: int, outcome: str, detail: str = "") -> None:
    """Write one job's outcome to the sweep ledger (a tag on the parent run); no-op outside a sweep."""
    if sweep_run is None:
        return
    tracking.set_tag(sweep_run, f"{LEDGER_PREFIX}{job_num}", f"{outcome} {detail}".strip()[:4000])


def ledger(run_id: str) -> dict[str, list[str]]:
    """The outcomes written by the jobs of a sweep, grouped: {'finished': [...], 'skipped': [...], ...}."""
    tags = tracking.tags_of(run_id)
    out: dict[str, list[str]] = {k: [] for k in OUTCOMES}
    for key, value in sorted(tags.items()):
        if key.startswith(LEDGER_PREFIX):
            outcome, _, detail = value.partition(" ")
            out.setdefault(outcome, []).append(f"{key}: {detail}")
    return out


def missing_jobs(run_id: str, n_jobs: int) -> list[int]:
    """Job numbers that wrote no outcome: their process died (killed for memory, a lost node)."""
    tags = tracking.tags_of(run_id)
    return [i for i in range(n_jobs) if f"{LEDGER_PREFIX}{i}" not in tags]


def finish(run_id: str, jobs: Sequence[Sequence[str]]) -> int:
    """Close the parent run, print the summary and the results table; the exit status: 1 if any job
    failed or went missing."""
    n_jobs = len(jobs)
    outcomes = ledger(run_id)
    failed, missing = outcomes["failed"], missing_jobs(run_id, n_jobs)
    bad = bool(failed or missing)
    leases.heartbeat.release(run_id)
    if missing:
        tracking.set_tag(run_id, "missing_jobs", " ".join(map(str, missing)))
    tracking.end_run(run_id, "FAILED" if bad else "FINISHED")
    log.info(
        "sweep summary: %d finished, %d skipped (already FINISHED in the study), %d running elsewhere, "
        "%d failed, %d missing",
        len(outcomes["finished"]),
        len(outcomes["skipped"]),
        len(outcomes["elsewhere"]),
        len(failed),
        len(missing),
    )
    for line in failed:
        log.error("sweep: failed %s", line)
    if missing:
        log.error(
            "sweep: job(s) %s recorded no outcome: their process died (out of memory, a killed worker or node); "
            "run the same command again to run them",
            ", ".join(map(str, missing)),
        )
    from harness import console  # pandas: only once the sweep is over

    experiment_id = tracking.experiment_of(run_id)
    children = f"tags.mlflow.parentRunId = '{run_id}' and tags.run_kind = 'job' and attributes.status = 'FINISHED'"
    trained = [run.info.run_id for run in tracking.find_runs(experiment_id, children, max_results=50000)]
    reused = [entry.split(": ", 1)[1] for entry in outcomes["skipped"] if ": " in entry]
    keys = console.swept_keys(jobs, ignore=[SWEEP_RUN_KEY])
    console.print_results(experiment_id, tracking.current_uri(), [*trained, *reused], keys)
    return 1 if bad else 0
