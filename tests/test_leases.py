"""Leases, reaping and claims on a real SQLite store: whoever runs where, each job identity trains once."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import mlflow
import pytest
from conftest import job_runs, run_cli, tiny_job

from harness import data, leases
from harness import owner as processes


@pytest.fixture
def experiment(store) -> str:
    mlflow.set_tracking_uri(store)
    return mlflow.create_experiment("leases")


def new_run(experiment: str, **tags: str) -> str:
    return mlflow.MlflowClient().create_run(experiment, tags=tags).info.run_id


def test_claims_at_the_same_moment_let_exactly_one_train(experiment):
    n = 6
    barrier = threading.Barrier(n)
    outcomes: list[str | None] = [None] * n

    def claimant(i: int) -> None:
        def create() -> str:
            return new_run(experiment, job_identity="same", run_kind="job", owner=processes.owner())

        barrier.wait()  # every claimant starts its claim at the same moment
        run_id, _ = leases.claim(experiment, "same", create, lambda: None, lease_s=60, heartbeat_s=30)
        outcomes[i] = run_id

    threads = [threading.Thread(target=claimant, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    winners = [o for o in outcomes if o is not None]
    assert len(winners) == 1, outcomes
    live = leases.live_claims(experiment, "same", lease_s=60)
    assert live == winners  # the losers withdrew their runs
    leases.heartbeat.release(winners[0])


def test_a_run_is_dead_when_its_lease_expires_whichever_host_ran_it(experiment):
    elsewhere = "other-host|another-boot|4026531836|12345|999"
    fresh = new_run(experiment, owner=elsewhere, heartbeat=f"{time.time():.3f}")
    stale = new_run(experiment, owner=elsewhere, heartbeat=f"{time.time() - 600:.3f}")
    client = mlflow.MlflowClient()
    assert leases.is_dead(client.get_run(fresh), lease_s=120) is None  # cannot tell from here: it may live
    assert "no heartbeat for 6" in leases.is_dead(client.get_run(stale), lease_s=120)
    assert leases.reap(experiment, lease_s=120) == 1
    assert client.get_run(stale).info.status == "KILLED"
    assert "lease_s=120" in client.get_run(stale).data.tags["killed_reason"]
    assert client.get_run(fresh).info.status == "RUNNING"


def test_an_exited_or_reused_pid_on_this_host_is_dead_at_once(experiment):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        me = processes.owner().split("|")
        started = processes._start_ticks(child.pid)
        alive = "|".join([*me[:3], str(child.pid), started])
        reused = "|".join([*me[:3], str(child.pid), str(int(started) - 1)])  # same pid, an earlier process
        assert not processes.owner_exited(alive)
        assert processes.owner_exited(reused)
    finally:
        child.kill()
        child.wait()
    assert processes.owner_exited(alive)
    run = new_run(experiment, owner=alive, pid=str(child.pid), heartbeat=f"{time.time():.3f}")
    assert "has exited" in leases.is_dead(mlflow.MlflowClient().get_run(run), lease_s=3600)


def test_the_heartbeat_thread_refreshes_held_runs(experiment):
    run = new_run(experiment)
    client = mlflow.MlflowClient()
    leases.heartbeat.hold(run, interval_s=0.2)
    try:
        first = float(client.get_run(run).data.tags["heartbeat"])
        deadline = time.monotonic() + 10
        while float(client.get_run(run).data.tags["heartbeat"]) == first and time.monotonic() < deadline:
            time.sleep(0.1)
        assert float(client.get_run(run).data.tags["heartbeat"]) > first
    finally:
        leases.heartbeat.release(run)


@pytest.mark.slow  # over 20 s: the slow tier runs it
def test_two_sweeps_of_one_study_at_once_run_every_configuration_once(tmp_path, store):
    photos = data.ensure_synthetic(tmp_path / "gen", {"train": 6, "validation": 3, "test": 3})
    run_cli(*tiny_job(store, photos, "dry_run=true"), cwd=tmp_path)  # creates the store's tables once
    args = [sys.executable, "-m", "harness", "-m", "seed=0,1,2,3", *tiny_job(store, photos)]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["HARNESS_CACHE_DIR"] = str(tmp_path / "cache")
    procs = [
        subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(log[-2000:] for log in logs)
    jobs = job_runs(store)
    finished = jobs[jobs.status == "FINISHED"]
    assert sorted(finished["tags.seed"]) == ["0", "1", "2", "3"], jobs[["status", "tags.seed"]]
    assert "RUNNING" not in set(jobs.status)
    both = "".join(logs)
    trained = both.count("frozen   done:")
    assert trained == 4, both[-3000:]  # each configuration trained once across the two sweeps
    assert both.count("skip: job") == 4


@pytest.mark.slow  # over 20 s: the slow tier runs it
@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="needs root and unshare")
def test_a_job_in_another_pid_namespace_is_reaped_only_when_its_lease_expires(tmp_path, store):
    """As a container sharing the store would be: its pid means nothing here, so only its lease can tell."""
    photos = data.ensure_synthetic(tmp_path / "gen", {"train": 6, "validation": 3, "test": 3})
    lease_s = 45  # longer than a CLI start-up (~10 s here), so the first rerun comes while the lease holds
    lease = [f"lease_s={lease_s}", "heartbeat_s=1", "epochs.head=200"]  # the same job each time: long enough to kill
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["HARNESS_CACHE_DIR"] = str(tmp_path / "cache")
    cmd = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-m", "harness"]
    job_runs(store)  # the store's tables exist before two processes use it (its migration is not concurrent-safe)
    output = (tmp_path / "contained.log").open("w")
    proc = subprocess.Popen(
        [*cmd, *tiny_job(store, photos, *lease)],
        cwd=tmp_path,
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        time.sleep(0.5)
        jobs = job_runs(store)
        if len(jobs) and "tags.heartbeat" in jobs and jobs["tags.heartbeat"].notna().any():
            break
    else:
        pytest.fail("the contained job never started:\n" + (tmp_path / "contained.log").read_text()[-3000:])
    time.sleep(2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = time.monotonic()

    early = run_cli(*tiny_job(store, photos, *lease), cwd=tmp_path)
    assert early.returncode == 0 and "running elsewhere" in early.log, early.log[-3000:]
    assert time.monotonic() - killed_at < lease_s, "too slow to check the lease before it expired"
    time.sleep(max(0.0, lease_s + 1 - (time.monotonic() - killed_at)))
    late = run_cli(*tiny_job(store, photos, *lease), cwd=tmp_path)
    assert late.returncode == 0 and "frozen   done:" in late.log, late.log[-3000:]
    jobs = job_runs(store)
    assert sorted(jobs.status) == ["FINISHED", "KILLED"]
    assert "no heartbeat" in jobs.loc[jobs.status == "KILLED", "tags.killed_reason"].item()
