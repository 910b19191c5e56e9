"""The claim protocol under chosen interleavings of two claimants' store operations, on a real SQLite store.

Each claimant runs the real protocol (`harness.jobs.claims.claim`), then, if it won, "trains" and finishes as a job
does (`leases.confirm`, then FINISHED). An `Interleaving` lets the claimants' threads touch the store one
operation at a time, in the order a schedule names them, so every schedule is one exact interleaving: all
those with at most two switches between the claimants (either starting), the two reported from real sweeps
(a job that finished between the other's two queries; two claimants that both backed off), and seeded random
ones. Whatever the order: exactly one trains, the other learns it is done or held, nothing stays RUNNING.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import mlflow
import pytest

from harness import tracking
from harness.jobs import claims, leases
from harness.tracking import owner as processes

STORE_CALLS = ("finished_job", "find_runs", "get_run", "set_tag", "end_run", "delete_run")


class Interleaving:
    """Claimant threads take turns at the store: the schedule names who does the next operation; once it is used
    up, the claimants still running take one operation each in turn."""

    def __init__(self, schedule: list[str], names: list[str]) -> None:
        self.schedule, self.names = schedule, names
        self.position, self.spin = 0, 0
        self.finished: set[str] = set()
        self.cv = threading.Condition()
        self.local = threading.local()
        self.trace: list[str] = []

    def current(self) -> str | None:
        while self.position < len(self.schedule) and self.schedule[self.position] in self.finished:
            self.position += 1
        if self.position < len(self.schedule):
            return self.schedule[self.position]
        running = [n for n in self.names if n not in self.finished]
        return running[self.spin % len(running)] if running else None

    def advance(self) -> None:
        if self.position < len(self.schedule):
            self.position += 1
        else:
            self.spin += 1

    @contextmanager
    def turn(self, what: str) -> Iterator[None]:
        name = getattr(self.local, "name", None)
        if name is None:  # the heartbeat's own thread: not a claimant, never held up
            yield
            return
        with self.cv:
            if not self.cv.wait_for(lambda: self.current() == name, timeout=60):
                raise TimeoutError(f"{name} never got its turn for {what} (trace {self.trace})")
        try:
            yield
        finally:
            with self.cv:
                self.trace.append(f"{name}:{what}")
                self.advance()
                self.cv.notify_all()

    def done(self, name: str) -> None:
        with self.cv:
            self.finished.add(name)
            self.cv.notify_all()

    def gate(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Route the store calls of the claim protocol through `turn`."""
        for call in STORE_CALLS:
            real = getattr(tracking, call)

            def gated(*args: Any, _real: Callable = real, _call: str = call, **kwargs: Any) -> Any:
                with self.turn(_call):
                    return _real(*args, **kwargs)

            monkeypatch.setattr(tracking, call, gated)


def claimant(experiment: str, identity: str, world: Interleaving, name: str, outcomes: dict[str, Any]) -> None:
    """One process that wants the identity: claim it; if it won, train (a store-free step) and finish."""
    world.local.name = name

    def create() -> str:
        with world.turn("create"):
            tags = {"job_identity": identity, "run_kind": "job", "owner": processes.owner(), **claims.initial_tags(60)}
            return mlflow.MlflowClient().create_run(experiment, tags=tags).info.run_id

    try:
        outcome = claims.claim(experiment, identity, create, lease_s=60, heartbeat_s=30)
        if isinstance(outcome, claims.Claimed):
            with world.turn("train"):
                pass
            leases.confirm(outcome.run_id)
            tracking.end_run(outcome.run_id, "FINISHED")
            leases.heartbeat.release(outcome.run_id)
        outcomes[name] = outcome
    except BaseException as exc:  # noqa: BLE001 - reported by the test, with the trace
        outcomes[name] = exc
    finally:
        world.done(name)


def play(experiment: str, identity: str, schedule: list[str], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Run claimants A and B under one schedule, in a study of its own, and check the outcome: exactly once.
    Returns who did each store operation, in order."""
    experiment = mlflow.create_experiment(f"{experiment}-{identity}")
    world = Interleaving(schedule, ["A", "B"])
    outcomes: dict[str, Any] = {}
    with monkeypatch.context() as patch:
        world.gate(patch)
        threads = [threading.Thread(target=claimant, args=(experiment, identity, world, n, outcomes)) for n in "AB"]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    where = f"schedule {''.join(schedule)}: {world.trace}"
    assert not any(isinstance(o, BaseException) for o in outcomes.values()), f"{outcomes} {where}"
    won = [n for n, o in outcomes.items() if isinstance(o, claims.Claimed)]
    assert len(won) == 1, f"trained by {won or 'nobody'}: {outcomes} {where}"
    winner = outcomes[won[0]].run_id
    other = outcomes["B" if won == ["A"] else "A"]
    if isinstance(other, claims.Done):
        assert other.finished.run_id == winner, where
    else:
        assert isinstance(other, claims.Held) and other.holder == winner, f"{other} {where}"
    runs = tracking.find_runs(experiment, f"tags.job_identity = '{identity}'")
    assert [(r.info.run_id, r.info.status) for r in runs] == [(winner, "FINISHED")], where
    return [step.split(":")[0] for step in world.trace]


@pytest.fixture
def experiment(store: str, monkeypatch: pytest.MonkeyPatch) -> str:
    mlflow.set_tracking_uri(store)
    monkeypatch.setattr(claims, "POLL_S", 0.0)  # a claimant waiting for a rival's ticket relists at once
    return mlflow.create_experiment("claims")


@pytest.mark.slow  # about 40 s: a few hundred interleavings
def test_every_interleaving_with_two_switches_trains_exactly_once(experiment, monkeypatch):
    """The first claimant does k1 operations, the second k2, the first up to 12 more (enough to finish unless it
    waits for the other), then they alternate: every k1 and k2 up to where a claimant is done before the switch
    (more would repeat an interleaving), or 11 (a claim and finish alone take 11 store operations; beyond that a
    claimant is only relisting while it waits for the other's ticket), both orders."""
    played = 0
    for first, second in ("AB", "BA"):
        for k1 in range(1, 12):
            for k2 in range(1, 12):
                trace = play(experiment, f"{first}{k1}-{k2}", [first] * k1 + [second] * k2 + [first] * 12, monkeypatch)
                played += 1
                if trace[k1 : k1 + k2].count(second) < k2 or trace[:k1].count(first) < k1:
                    break  # the second was done within its k2 operations (or the first within k1)
            if trace[:k1].count(first) < k1:
                break  # the first was done alone: a larger k1 is the same schedule
    assert played > 50  # the protocol has more than a handful of steps to interleave


def test_a_job_that_finishes_between_the_others_lookups_is_seen_as_done(experiment, monkeypatch):
    """Reproduced with two sweeps on a tracking server: B claims, trains and finishes while A is between its
    "is there a FINISHED run?" and "is there a live claim?" lookups; neither lookup saw it, and A trained too."""
    for k in range(1, 12):  # wherever A is in its claim when B finishes
        play(experiment, f"between-{k}", ["A"] * k + ["B"] * 40 + ["A"] * 40, monkeypatch)


def test_claimants_that_see_each_other_never_both_back_off(experiment, monkeypatch):
    """Reproduced: two sweeps' jobs saw each other's claim, both withdrew, and the configuration ran in neither.
    Strict alternation makes each see the other at every step."""
    play(experiment, "alternating-AB", list("AB" * 40), monkeypatch)
    play(experiment, "alternating-BA", list("BA" * 40), monkeypatch)
    play(experiment, "pairs", list("AABB" * 20), monkeypatch)


def test_seeded_random_interleavings_train_exactly_once(experiment, monkeypatch):
    rng = random.Random(20261129)
    for i in range(40):
        play(experiment, f"random-{i}", [rng.choice("AB") for _ in range(60)], monkeypatch)


def test_six_claims_at_the_same_moment_let_exactly_one_train(experiment):
    n = 6
    barrier = threading.Barrier(n)
    outcomes: list[Any] = [None] * n

    def one(i: int) -> None:
        def create() -> str:
            tags = {"job_identity": "same", "run_kind": "job", "owner": processes.owner(), **claims.initial_tags(60)}
            return mlflow.MlflowClient().create_run(experiment, tags=tags).info.run_id

        barrier.wait()  # every claimant starts its claim at the same moment
        outcomes[i] = claims.claim(experiment, "same", create, lease_s=60, heartbeat_s=30)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    winners = [o.run_id for o in outcomes if isinstance(o, claims.Claimed)]
    assert len(winners) == 1, outcomes
    assert {o.holder for o in outcomes if isinstance(o, claims.Held)} == set(winners)  # the others name the holder
    running = tracking.find_runs(experiment, "attributes.status = 'RUNNING'")
    assert [r.info.run_id for r in running] == winners  # the losers withdrew their runs
    leases.heartbeat.release(winners[0])


def test_a_reaped_finish_does_not_count_and_a_later_claim_trains(experiment):
    """A holder stopped past its lease is reaped; if it then writes FINISHED anyway, the reaper's mark voids it."""

    def create() -> str:
        tags = {"job_identity": "x", "run_kind": "job", **claims.initial_tags(60)}
        return mlflow.MlflowClient().create_run(experiment, tags=tags).info.run_id

    first = claims.claim(experiment, "x", create, lease_s=60, heartbeat_s=30)
    assert isinstance(first, claims.Claimed)
    leases.heartbeat.release(first.run_id)  # it stops beating: stopped or cut off
    leases.kill(first.run_id, "no heartbeat for 61 s (lease_s=60)")  # what a reaper elsewhere does
    tracking.end_run(first.run_id, "FINISHED")  # the stopped process comes back and finishes
    assert leases.lost_reason_after_finish(first.run_id) is not None
    assert tracking.get_run(first.run_id).info.status == "KILLED"
    assert tracking.finished_job(experiment, "x") is None
    second = claims.claim(experiment, "x", create, lease_s=60, heartbeat_s=30)
    assert isinstance(second, claims.Claimed)
    leases.heartbeat.release(second.run_id)
