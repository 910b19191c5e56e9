"""Who holds a run, for how long: heartbeats, leases, reaping of dead runs, and fencing of a holder that lost.

Many processes on many machines may share one study (one MLflow experiment). A host name and a pid do
not say whether a run's owner is alive once two machines, or two containers with one host name, share
the store. So:

- **Heartbeat.** A running job refreshes the tag `heartbeat` (Unix seconds) on its runs from a background
  thread every `heartbeat_s`, and at each epoch.
- **Lease.** Each run records its own `lease_s` (tag). A RUNNING run whose heartbeat is older than the
  lease *it recorded* is dead, whichever host ran it and whatever lease the reaper itself runs with: the
  reaper tags it `killed_reason` and marks it KILLED. On the same host (same boot id and pid namespace) a
  run whose process has exited, or whose pid now belongs to a process started later, is reaped at once;
  anything less certain (another host, a process this user may not inspect) waits for the lease.
- **Fencing.** `killed_reason` is written before the KILLED status and never removed, so a run that was
  reaped is never a valid record, even if its owner, paused while it was reaped (a stopped process, a
  frozen node), comes back and marks it FINISHED. The owner checks its claim at every heartbeat and at
  every epoch and before it finishes; once it finds the claim taken, training stops with `LostLease`, the
  run stays KILLED and the sweep counts the job as "lost its lease".

The claim on a job identity (who trains it) is `harness.jobs.claims`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from harness import record_version, tracking
from harness.errors import LostLease
from harness.tracking import KILLED_REASON, LEASE_TAG
from harness.tracking.owner import owner_exited

log = logging.getLogger(__name__)

__all__ = ["KILLED_REASON", "LEASE_TAG", "LostLease", "heartbeat"]


def lost_reason(run: Any) -> str | None:
    """Why a run can no longer be held by its owner (reaped, ended or deleted by someone else), or None."""
    tags = run.data.tags
    if KILLED_REASON in tags:
        return f"reaped by another process ({tags[KILLED_REASON]})"
    if run.info.lifecycle_stage == "deleted":
        return "deleted by another process"
    if run.info.status != "RUNNING":
        return f"marked {run.info.status} by another process"
    return None


# The least time between two heartbeats sent from epochs' ends (`Heartbeat.beat_and_check`).
EPOCH_BEAT_S = 1.0


class Heartbeat:
    """A daemon thread that refreshes the `heartbeat` tag of the runs this process holds, and checks the
    fenced ones (job runs: claims) for being taken away."""

    def __init__(self) -> None:
        self.runs: set[str] = set()
        self.fenced: set[str] = set()
        self.lost: dict[str, str] = {}
        self.interval_s = 30.0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._last_beat = float("-inf")  # time.monotonic() of the last beat, by the thread or at an epoch's end

    def hold(self, run_id: str, interval_s: float, fence: bool = False) -> None:
        """Beat for `run_id` from now on (immediately once, then every `interval_s`); `fence`: also check at
        each beat that nobody took it (see `check`)."""
        with self._lock:
            self.runs.add(run_id)
            if fence:
                self.fenced.add(run_id)
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
            self.fenced.discard(run_id)
            self.lost.pop(run_id, None)

    @contextmanager
    def held(self, run_id: str, interval_s: float, fence: bool = False) -> Iterator[None]:
        """Beat for `run_id` while the block runs."""
        self.hold(run_id, interval_s, fence)
        try:
            yield
        finally:
            self.release(run_id)

    def beat(self) -> None:
        """Refresh every held run now, then look at the fenced ones; a store that does not answer is logged, not
        fatal (the next beat retries, and the lease is longer than a few missed beats)."""
        with self._lock:
            runs, fenced = list(self.runs), set(self.fenced)
        self._last_beat = time.monotonic()
        now = f"{time.time():.3f}"
        for run_id in runs:
            try:
                tracking.set_tag(run_id, "heartbeat", now)
                if run_id in fenced:
                    reason = lost_reason(tracking.get_run(run_id))
                    if reason is not None:
                        with self._lock:
                            self.lost.setdefault(run_id, reason)
            except Exception as exc:  # noqa: BLE001 - a missed beat is survivable; the lease is longer
                log.warning("heartbeat: could not refresh run %s (%s)", run_id, exc)

    def check(self) -> None:
        """Raise LostLease if a fenced run of this process was found taken (no store request: cheap enough
        for every batch)."""
        with self._lock:
            lost = next(iter(self.lost.items()), None)
        if lost is not None:
            raise LostLease(*lost)

    def beat_and_check(self) -> None:
        """At each epoch's end: a heartbeat unless one went out less than `EPOCH_BEAT_S` ago, and the fencing check.

        Epochs on cached features take a tenth of a second, and each beat is three store requests (about 14 ms
        on SQLite): beating at every one of 30 such epochs cost 0.4 s of the run. A lost claim is still found
        within a second or an epoch, whichever is longer."""
        if time.monotonic() - self._last_beat >= EPOCH_BEAT_S:
            self.beat()
        self.check()

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if self.runs:
                self.beat()


heartbeat = Heartbeat()


def confirm(run_id: str) -> None:
    """Just before a job marks its run FINISHED: a fresh heartbeat, then the run read back from the store;
    LostLease if it was taken. (A reaper that decided on the stale heartbeat and writes after this check
    still leaves its `killed_reason`, which makes the FINISHED status invalid: see `valid_finished`.)"""
    tracking.set_tag(run_id, "heartbeat", f"{time.time():.3f}")
    reason = lost_reason(tracking.get_run(run_id))
    if reason is not None:
        raise LostLease(run_id, reason)


def lost_reason_after_finish(run_id: str) -> str | None:
    """After a job marked its run FINISHED: if a reaper's mark arrived meanwhile, that status is void; the run
    is put back to KILLED and the reason returned (None when the run stands)."""
    run = tracking.get_run(run_id)
    if KILLED_REASON not in run.data.tags:
        return None
    tracking.end_run(run_id, "KILLED")
    return f"reaped while it finished ({run.data.tags[KILLED_REASON]})"


def valid_finished(run: Any) -> bool:
    """A FINISHED run that was never reaped: the only kind that counts as a result."""
    return run.info.status == "FINISHED" and KILLED_REASON not in run.data.tags


def guard() -> Any:
    """A Keras callback that stops training as soon as the heartbeat found this job's claim taken (checked
    after every batch call, no store request), and beats (at most once a second) and checks at every epoch's end."""
    import keras

    class Fence(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            heartbeat.check()

        def on_epoch_end(self, epoch, logs=None):
            heartbeat.beat_and_check()

    return Fence()


def last_beat(run: Any) -> float:
    """When a run last showed life: its heartbeat tag, else its start time (no beat yet, or a version 1 run from
    before leases)."""
    value = run.data.tags.get("heartbeat")
    try:
        return float(value) if value is not None else run.info.start_time / 1000
    except ValueError:
        return run.info.start_time / 1000


def lease_of(run: Any, default_s: float) -> float:
    """The lease a run recorded when it was created (`default_s` for version 1 runs, which recorded none)."""
    try:
        return record_version.lease_s(run.data.tags, LEASE_TAG, default_s)
    except ValueError:  # not a number: the lease a run without one gets
        return float(default_s)


def is_dead(run: Any, lease_s: float, now: float | None = None) -> str | None:
    """Why a RUNNING run is dead (its own lease expired, or its process on this host exited), or None if it may
    live. `lease_s` applies only to runs that recorded no lease of their own."""
    lease = lease_of(run, lease_s)
    age = (now or time.time()) - last_beat(run)
    if age > lease:
        return f"no heartbeat for {age:.0f} s (lease_s={lease:g})"
    if owner_exited(run.data.tags.get("owner")):
        return f"its process {run.data.tags.get('pid', '?')} on this host has exited"
    return None


def kill(run_id: str, reason: str) -> None:
    """Reap one run: the fencing mark first, then the status (see the module docstring)."""
    tracking.set_tag(run_id, KILLED_REASON, reason)
    tracking.end_run(run_id, "KILLED")


def reap(experiment_id: str, lease_s: float, extra_filter: str = "") -> int:
    """Mark KILLED, with the reason, every RUNNING run of the study that is dead (see `is_dead`)."""
    query = "attributes.status = 'RUNNING'" + (f" and {extra_filter}" if extra_filter else "")
    killed = 0
    for run in tracking.find_runs(experiment_id, query, max_results=50000):
        reason = is_dead(run, lease_s)
        if reason is None:
            continue
        kill(run.info.run_id, reason)
        killed += 1
    if killed:
        log.warning("tracking: marked %d run(s) left RUNNING by dead processes as KILLED", killed)
    return killed


def end_interrupted_jobs(sweep_run: Any, reason: str, wait_s: float = 15.0) -> int:
    """After a sweep was interrupted, end KILLED, tagged `interrupted` with `reason`, the sweep's job runs (and
    their regime runs) still RUNNING whose process has exited: a launcher may kill its workers before they close
    their runs (joblib does on Ctrl-C). Waits up to `wait_s` for those processes to exit; a job still alive then, or
    on another host, is left to its own handler or its lease."""
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    experiment_id = sweep_run.info.experiment_id

    def running_children(parent_id: str) -> list[Any]:
        query = f"attributes.status = 'RUNNING' and tags.{MLFLOW_PARENT_RUN_ID} = '{parent_id}'"
        return tracking.find_runs(experiment_id, query)

    deadline = time.monotonic() + wait_s
    while True:
        running = running_children(sweep_run.info.run_id)
        dead = [r for r in running if owner_exited(r.data.tags.get("owner"))]
        if len(dead) == len(running) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for run in dead:
        tracking.set_tag(run.info.run_id, tracking.INTERRUPTED_TAG, reason)
        kill(run.info.run_id, f"its process {run.data.tags.get('pid', '?')} on this host has exited")
        for child in running_children(run.info.run_id):
            tracking.set_tag(child.info.run_id, tracking.INTERRUPTED_TAG, reason)
            kill(child.info.run_id, f"its job run {run.info.run_id} was interrupted")
    return len(dead)
