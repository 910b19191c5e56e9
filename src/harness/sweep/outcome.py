"""How a job ended, in one table: its ledger entry, a single run's exit status, what is said and returned.

`python -m harness` runs one job, in a sweep or alone. Whatever happens to it (trained, already done,
held elsewhere, its claim lost, bad input, a crash) becomes one `Ending` here, so the entry point only
records it and exits with its status.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from omegaconf import DictConfig

from harness.config import load
from harness.errors import HarnessError, LostLease
from harness.sweep.ledger import Entry

log = logging.getLogger("harness")

# a single run's exit status by ledger outcome; bad input (a failed entry from HarnessError) exits 2 instead
EXIT_STATUS = {"finished": 0, "skipped": 0, "elsewhere": 1, "lost": 1, "failed": 1}
BAD_INPUT = 2


@dataclass(frozen=True)
class Ending:
    """One job's end: the ledger entry, a single run's exit status, the objective a search sweeper reads, the
    error line a single run prints (a sweep's summary says it for its jobs), the job run whose row to show."""

    entry: Entry | None  # None: nothing for a ledger (a single run's plan)
    status: int
    objective: float | None = None
    single_run_error: str | None = None
    shown: str | None = None


def run_job(raw: DictConfig, overrides: list[str]) -> Ending:
    """Run (or plan) the job and say how it ended; errors are logged here, once, without a traceback for bad input."""
    from harness import tracking
    from harness.jobs import job

    described = " ".join(overrides)
    try:
        cfg = load(raw)  # the one conversion: everything below takes the schema's dataclasses
        if cfg.dry_run:  # the harness sweeper plans a sweep itself and launches nothing; any other plans per job
            from harness.jobs import checks, plan

            checks.check(cfg)
            plan.print_plan([(overrides, cfg)])
            return Ending(None, 0)
        results = job.run(cfg, overrides, tracking.run_name(overrides))
    except HarnessError as exc:
        log.error("%s", exc)
        return Ending(Entry("failed", detail=str(exc)), BAD_INPUT)
    except LostLease as exc:
        log.error("job [%s] stopped: %s; its run is left KILLED (another process may hold it now)", described, exc)
        return Ending(Entry("lost", exc.run_id, exc.reason), EXIT_STATUS["lost"])
    except Exception as exc:
        log.exception("job [%s] failed", described)
        return Ending(Entry("failed", detail=f"{type(exc).__name__}: {exc}"), EXIT_STATUS["failed"])
    if isinstance(results, job.Elsewhere):
        said = (
            f"this job is running elsewhere (run {results.holder} holds it): not done here; run again once it ends,"
            " or with wait_for_others=true to wait for it"
        )
        return Ending(Entry("elsewhere", results.holder), EXIT_STATUS["elsewhere"], single_run_error=said)
    if isinstance(results, job.Skipped):  # the report follows this id to the finished run
        objective = tracking.run_metric(results.run_id, job.OBJECTIVE)
        return Ending(Entry("skipped", results.run_id), EXIT_STATUS["skipped"], objective, shown=results.run_id)
    finished = tracking.last_job_run_id()
    return Ending(Entry("finished", finished), EXIT_STATUS["finished"], job.objective(results), shown=finished)
