"""Who holds a run, for how long: heartbeats, leases, reaping of dead runs and claims on a job identity.

Many processes on many machines may share one study (one MLflow experiment). A host name and a pid do
not say whether a run's owner is alive once two machines, or two containers with one host name, share
the store. So:

- **Heartbeat.** A running job refreshes the tag `heartbeat` (Unix seconds) on its runs from a background
  thread every `heartbeat_s`, and at each epoch.
- **Lease.** A RUNNING run whose heartbeat is older than `lease_s` is dead, whichever host ran it: the
  reaper marks it KILLED with the reason. On the same host (same boot id and pid namespace) a run whose
  process has exited, or whose pid now belongs to a process started later, is reaped at once; anything
  less certain waits for the lease.
- **Claim.** Before a job trains, it creates its job run (the claim), then lists the live claims on its
  identity. If there is another, it withdraws (deletes its run) and, after a random back-off, looks again:
  a FINISHED run or a live claim means "done" or "running elsewhere"; none means it claims again. Two
  claimants that see each other both withdraw, so at most one trains. See the README for the failure modes.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from harness import tracking
from harness.owner import owner_exited

log = logging.getLogger(__name__)

CLAIM_ATTEMPTS = 8


class Heartbeat:
    """A daemon thread that refreshes the `heartbeat` tag of the runs this process holds."""

    def __init__(self) -> None:
        self.runs: set[str] = set()
        self.interval_s = 30.0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def hold(self, run_id: str, interval_s: float) -> None:
        """Beat for `run_id` from now on (immediately once, then every `interval_s`)."""
        with self._lock:
            self.runs.add(run_id)
            self.interval_s = float(interval_s)
        self.beat()
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._loop, name="harness-heartbeat", daemon=True)
            self._thread.start()
        else:
            self._wake.set()  # the thread may be waiting out a longer interval: make the new one count now

    def release(self, run_id: str) -> None:
        with self._lock:
            self.runs.discard(run_id)

    @contextmanager
    def held(self, run_id: str, interval_s: float) -> Iterator[None]:
        """Beat for `run_id` while the block runs."""
        self.hold(run_id, interval_s)
        try:
            yield
        finally:
            self.release(run_id)

    def beat(self) -> None:
        """Refresh every held run now; a store that does not answer is logged, not fatal (the next beat retries)."""
        with self._lock:
            runs = list(self.runs)
        now = f"{time.time():.3f}"
        for run_id in runs:
            try:
                tracking.set_tag(run_id, "heartbeat", now)
            except Exception as exc:  # noqa: BLE001 - a missed beat is survivable; the lease is longer
                log.warning("heartbeat: could not refresh run %s (%s)", run_id, exc)

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self.runs:
                self.beat()


heartbeat = Heartbeat()


def last_beat(run: Any) -> float:
    """When a run last showed life: its heartbeat tag, else its start time (runs from before leases)."""
    value = run.data.tags.get("heartbeat")
    try:
        return float(value) if value is not None else run.info.start_time / 1000
    except ValueError:
        return run.info.start_time / 1000


def is_dead(run: Any, lease_s: float, now: float | None = None) -> str | None:
    """Why a RUNNING run is dead (lease expired, or its process on this host exited), or None if it may live."""
    age = (now or time.time()) - last_beat(run)
    if age > lease_s:
        return f"no heartbeat for {age:.0f} s (lease_s={lease_s:g})"
    if owner_exited(run.data.tags.get("owner")):
        return f"its process {run.data.tags.get('pid', '?')} on this host has exited"
    return None


def reap(experiment_id: str, lease_s: float, extra_filter: str = "") -> int:
    """Mark KILLED, with the reason, every RUNNING run of the study that is dead (see `is_dead`)."""
    query = "attributes.status = 'RUNNING'" + (f" and {extra_filter}" if extra_filter else "")
    killed = 0
    for run in tracking.find_runs(experiment_id, query, max_results=50000):
        reason = is_dead(run, lease_s)
        if reason is None:
            continue
        tracking.set_tag(run.info.run_id, "killed_reason", reason)
        tracking.end_run(run.info.run_id, "KILLED")
        killed += 1
    if killed:
        log.warning("tracking: marked %d run(s) left RUNNING by dead processes as KILLED", killed)
    return killed


def live_claims(experiment_id: str, job_identity: str, lease_s: float) -> list[str]:
    """Ids of RUNNING job runs of this identity that are not dead; dead ones are reaped on the way."""
    query = f"tags.job_identity = '{job_identity}' and tags.run_kind = 'job'"
    reap(experiment_id, lease_s, query)
    found = tracking.find_runs(experiment_id, f"{query} and attributes.status = 'RUNNING'")
    return [run.info.run_id for run in found]


def claim(
    experiment_id: str,
    job_identity: str,
    create: Callable[[], str],
    done: Callable[[], Any],
    lease_s: float,
    heartbeat_s: float,
) -> tuple[str | None, Any]:
    """Claim a job identity: (run id, None) when this process may train it, (None, what `done` found) when
    a FINISHED run has it, (None, None) when it is running elsewhere. `create` makes the job run."""
    for attempt in range(CLAIM_ATTEMPTS):
        finished = done()
        if finished is not None:
            return None, finished
        if live_claims(experiment_id, job_identity, lease_s):
            return None, None
        run_id = create()
        heartbeat.hold(run_id, heartbeat_s)
        others = [r for r in live_claims(experiment_id, job_identity, lease_s) if r != run_id]
        if not others:
            return run_id, None
        heartbeat.release(run_id)
        tracking.delete_run(run_id)  # withdrawn: both claimants saw each other; one goes first after a back-off
        log.info("claim: job %s claimed at the same moment by run(s) %s; backing off", job_identity, others)
        time.sleep(random.uniform(0.05, 0.5) * (attempt + 1))
    return None, None
