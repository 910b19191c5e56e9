"""Claims on a job identity: of the processes that want to train one configuration at once, exactly one does.

MLflow offers no compare-and-set, only runs that each writer creates and tags, and searches that every later
read sees (PostgreSQL; SQLite on one machine). A claim is therefore a job run of the identity, and the
protocol is Lamport's bakery over those runs:

1. The claimant creates its job run with the ticket tag `claim_ticket=choosing` (and starts its heartbeat).
2. It lists the identity's runs and takes a ticket one above the highest it sees, and tags its run with it.
3. It lists them again (reaping the dead ones, judged by the lease each run recorded). While a live rival
   is still choosing, it waits (a rival that dies while choosing loses its lease and is reaped).

Then the two rules:

- **Who wins.** A valid FINISHED run of the identity means done: the claimant withdraws and skips. Otherwise
  the live claim with the lowest (ticket, run id) holds the identity: it trains, every other claimant
  withdraws (deletes its run) and reports "running elsewhere". Two winners are impossible: of two claims,
  the one created later either is seen by the other's final listing, ticket and all (both then compare the
  same two keys), or was created after that listing began, in which case its own first listing saw the
  other's ticket and took a higher one.
- **Someone wins.** The lowest live claim never withdraws for another claim (there is no lower one), so a
  configuration that no one holds is always claimed by someone: claimants never all back off. A claim
  whose process dies is reaped once its lease expires, and the next claimant takes over.

A holder that is stopped for longer than its lease is reaped and fenced (`harness.jobs.leases`): it learns so at
its next heartbeat or epoch and stops, and its run never counts as a result.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from harness import record_version, tracking
from harness.jobs import leases

log = logging.getLogger(__name__)

TICKET_TAG = "claim_ticket"
CHOOSING = "choosing"
POLL_S = 0.2  # between listings while a rival chooses its ticket (it takes one listing and one tag)


@dataclass(frozen=True)
class Claimed:
    """This process holds the identity: it trains."""

    run_id: str


@dataclass(frozen=True)
class Done:
    """A valid FINISHED run of the identity exists: nothing to train."""

    finished: tracking.FinishedJob


@dataclass(frozen=True)
class Held:
    """Another live claim holds the identity ("running elsewhere")."""

    holder: str


def initial_tags(lease_s: float) -> dict[str, str]:
    """Tags a job run is created with: not yet ordered (choosing), and the lease by which others judge it."""
    return {TICKET_TAG: CHOOSING, leases.LEASE_TAG: f"{float(lease_s):g}"}


def ticket_of(run: Any) -> int | None:
    """A claim's ticket; None while it is choosing; 0 for a version 1 job run from before tickets (it holds first)."""
    return record_version.ticket(run.data.tags, TICKET_TAG, CHOOSING)


def _order(run: Any) -> tuple[int, str]:
    return (ticket_of(run) or 0, run.info.run_id)


def identity_runs(experiment_id: str, job_identity: str, lease_s: float) -> list[Any]:
    """Every job run of the identity that is not deleted, after reaping the dead RUNNING ones (and their
    RUNNING regime runs)."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    query = f"tags.job_identity = '{job_identity}' and tags.run_kind = 'job'"
    runs = tracking.find_runs(experiment_id, query, max_results=1000)
    reaped = set()
    for run in runs:
        reason = leases.is_dead(run, lease_s) if run.info.status == "RUNNING" else None
        if reason is not None:
            leases.kill(run.info.run_id, reason)
            leases.reap(experiment_id, lease_s, f"tags.{MLFLOW_PARENT_RUN_ID} = '{run.info.run_id}'")
            log.warning("claim: reaped job run %s of %s: %s", run.info.run_id, job_identity, reason)
            reaped.add(run.info.run_id)
    return [tracking.get_run(r.info.run_id) if r.info.run_id in reaped else r for r in runs]


def _finished(runs: list[Any]) -> tracking.FinishedJob | None:
    valid = sorted((r for r in runs if leases.valid_finished(r)), key=lambda r: r.info.start_time, reverse=True)
    return tracking.FinishedJob.of(valid[0]) if valid else None


def claim(
    experiment_id: str,
    job_identity: str,
    create: Callable[[], str],
    lease_s: float,
    heartbeat_s: float,
    force: bool = False,
) -> Claimed | Done | Held:
    """Claim a job identity (see the module docstring). `create` makes the job run, tagged `initial_tags`;
    `force` trains even when a FINISHED run exists (never while another claim is live). The winner's run is
    held by the heartbeat, fenced; a loser's run is deleted."""
    if not force:
        done = tracking.finished_job(experiment_id, job_identity)
        if done is not None:
            return Done(done)
    while True:
        run_id = create()
        leases.heartbeat.hold(run_id, heartbeat_s, fence=True)
        try:
            outcome = _decide(experiment_id, job_identity, run_id, lease_s, force)
        except BaseException:
            withdraw(run_id)
            raise
        if isinstance(outcome, Claimed):
            return outcome
        withdraw(run_id)
        if outcome is not None:
            return outcome
        # our own claim was reaped while we chose (this process was stopped): start over


def _decide(experiment_id: str, job_identity: str, run_id: str, lease_s: float, force: bool) -> Any:
    """Steps 2 and 3 of the protocol; None when this claim itself was reaped meanwhile."""
    runs = identity_runs(experiment_id, job_identity, lease_s)
    ticket = 1 + max((ticket_of(r) or 0 for r in runs), default=0)
    tracking.set_tag(run_id, TICKET_TAG, str(ticket))
    me = (ticket, run_id)
    while True:
        runs = identity_runs(experiment_id, job_identity, lease_s)
        mine = next((r for r in runs if r.info.run_id == run_id), None)
        if mine is None or mine.info.status != "RUNNING":
            return None
        done = None if force else _finished(runs)
        if done is not None:
            return Done(done)
        rivals = [r for r in runs if r.info.status == "RUNNING" and r.info.run_id != run_id]
        if any(ticket_of(r) is None for r in rivals):
            time.sleep(POLL_S)
            continue
        ahead = sorted((r for r in rivals if _order(r) < me), key=_order)
        if ahead:
            return Held(ahead[0].info.run_id)
        return Claimed(run_id)


def withdraw(run_id: str) -> None:
    """Give a claim up: no heartbeat, run deleted (a run that cannot be deleted now dies by its lease)."""
    leases.heartbeat.release(run_id)
    try:
        tracking.delete_run(run_id)
    except Exception as exc:  # noqa: BLE001 - its lease expires without a heartbeat; the reaper ends it
        log.warning("claim: could not withdraw run %s (%s); it ends when its lease expires", run_id, exc)


def wait_for(holder: str, lease_s: float, poll_s: float) -> None:
    """Wait while the holder's run is RUNNING and alive (by its lease); return once it ended or died."""
    while True:
        run = tracking.get_run(holder)
        if run.info.status != "RUNNING" or run.info.lifecycle_stage == "deleted":
            return
        if leases.is_dead(run, lease_s) is not None:
            return  # the next claim reaps it
        time.sleep(poll_s)
