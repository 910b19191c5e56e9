"""Leases, reaping and claims on a real SQLite store: whoever runs where, each job identity trains once."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from conftest import compose, job_runs, run_cli, start_cli, tiny_job
from servers import wait_until

from harness import data
from harness.errors import LostLease
from harness.jobs import job as jobs
from harness.jobs import leases
from harness.tracking import owner as processes


@pytest.fixture
def experiment(store) -> str:
    mlflow.set_tracking_uri(store)
    return mlflow.create_experiment("leases")


def new_run(experiment: str, **tags: str) -> str:
    return mlflow.MlflowClient().create_run(experiment, tags=tags).info.run_id


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


def test_a_run_is_judged_by_the_lease_it_recorded_not_by_the_reapers(experiment):
    elsewhere = "other-host|another-boot|4026531836|12345|999"
    now = time.time()
    patient = new_run(experiment, owner=elsewhere, heartbeat=f"{now - 300:.3f}", lease_s="600")
    hasty = new_run(experiment, owner=elsewhere, heartbeat=f"{now - 100:.3f}", lease_s="60")
    legacy = new_run(experiment, owner=elsewhere, heartbeat=f"{now - 100:.3f}")  # no lease recorded
    assert leases.reap(experiment, lease_s=3600) == 1  # the reaper's own lease is long; the hasty run's is not
    client = mlflow.MlflowClient()
    assert client.get_run(hasty).info.status == "KILLED"
    assert "lease_s=60" in client.get_run(hasty).data.tags["killed_reason"]
    assert client.get_run(patient).info.status == "RUNNING" and client.get_run(legacy).info.status == "RUNNING"
    assert leases.reap(experiment, lease_s=30) == 1  # a legacy run falls back to the reaper's setting
    assert client.get_run(legacy).info.status == "KILLED" and client.get_run(patient).info.status == "RUNNING"


@pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(t) for t in ("unshare", "setpriv")), reason="needs root, unshare, setpriv"
)
def test_a_process_that_proc_hides_is_not_taken_for_exited(tmp_path):
    """/proc mounted with hidepid=2 shows a user only its own processes: another user's live job has no
    /proc/<pid>. Its run must wait for its lease, not be reaped at once; once it has really exited, it is."""
    check = (
        "import sys; from harness.tracking.owner import owner_exited; import os; "
        "print(os.path.exists('/proc/' + sys.argv[1].split('|')[3]), owner_exited(sys.argv[1]))"
    )
    record = (
        "import sys; from harness.tracking import owner as o; pid = int(sys.argv[1]); "
        "print('|'.join([*o.owner().split('|')[:3], str(pid), o.started(pid)]))"
    )
    py = shlex.quote(sys.executable)
    # uid 0 without capabilities and outside group 0 (which hidepid exempts): an ordinary user for /proc and kill
    capless = "setpriv --regid=65534 --clear-groups --bounding-set=-all --inh-caps=-all --"
    script = f"""
        set -e
        mount -t proc -o hidepid=2 proc /proc
        setpriv --reuid=65534 --regid=65534 --clear-groups sleep 60 &
        job=$!
        sleep 0.5
        rec=$({py} -c {shlex.quote(record)} $job)
        {capless} {py} -c {shlex.quote(check)} "$rec"
        kill $job; wait $job || true
        {capless} {py} -c {shlex.quote(check)} "$rec"
    """
    proc = subprocess.run(
        ["unshare", "--mount", "--pid", "--fork", "--mount-proc", "sh", "-c", script],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split() == ["False", "False", "False", "True"], proc.stdout + proc.stderr


def test_an_exited_or_reused_pid_on_this_host_is_dead_at_once(experiment):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        me = processes.owner().split("|")
        started = processes.started(child.pid)
        alive = "|".join([*me[:3], str(child.pid), started])
        reused = "|".join([*me[:3], str(child.pid), f"{float(started) - 1:.2f}"])  # same pid, an earlier process
        legacy = "|".join([*me[:3], str(child.pid), "123456"])  # clock ticks, as recorded before psutil's times
        assert not processes.owner_exited(alive)
        assert processes.owner_exited(reused)
        assert not processes.owner_exited(legacy)  # cannot be compared: its lease decides
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
    # wait_for_others: a sweep that meets a configuration held by the other waits for it, then counts it done
    args = ["-m", "seed=0,1,2,3", *tiny_job(store, photos, "wait_for_others=true")]
    procs = [start_cli(*args, cwd=tmp_path) for _ in range(2)]
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
    assert early.returncode == 1 and "running elsewhere" in early.log, early.log[-3000:]  # not done here
    assert time.monotonic() - killed_at < lease_s, "too slow to check the lease before it expired"
    time.sleep(max(0.0, lease_s + 1 - (time.monotonic() - killed_at)))
    late = run_cli(*tiny_job(store, photos, *lease), cwd=tmp_path)
    assert late.returncode == 0 and "frozen   done:" in late.log, late.log[-3000:]
    jobs = job_runs(store)
    assert sorted(jobs.status) == ["FINISHED", "KILLED"]
    assert "no heartbeat" in jobs.loc[jobs.status == "KILLED", "tags.killed_reason"].item()


def wait_for(condition, timeout_s: float = 300, what: str = "") -> None:
    wait_until(condition, timeout_s, what)


def test_epoch_ends_beat_at_most_once_a_second_and_still_find_a_taken_claim(experiment):
    run = new_run(experiment)
    client = mlflow.MlflowClient()
    beats = leases.Heartbeat()  # no thread: only the epoch ends beat
    beats.runs.add(run)
    beats.fenced.add(run)
    beats.beat_and_check()  # the first epoch's end beats
    first = client.get_run(run).data.tags["heartbeat"]
    beats.beat_and_check()  # the next, a tenth of a second later: no store request
    assert client.get_run(run).data.tags["heartbeat"] == first
    client.set_terminated(run, "KILLED")  # another process took the claim
    beats.beat_and_check()  # not seen yet: no beat went out
    time.sleep(leases.EPOCH_BEAT_S)
    with pytest.raises(LostLease, match="marked KILLED by another process"):
        beats.beat_and_check()
    assert float(client.get_run(run).data.tags["heartbeat"]) > float(first)


@pytest.mark.slow  # a job stopped past its lease, another trained meanwhile: about a minute
def test_a_job_stopped_past_its_lease_learns_it_lost_the_claim_and_stops(tmp_path, store):
    """SIGSTOP a training job for longer than its lease, run the same command meanwhile (it reaps the stopped
    job's run and trains), then SIGCONT: the first job notices at its next heartbeat or epoch, stops, leaves
    its run KILLED and exits non-zero; the study holds one FINISHED job run."""
    photos = data.ensure_synthetic(tmp_path / "gen", {"train": 6, "validation": 3, "test": 3})
    args = tiny_job(store, photos, "lease_s=6", "heartbeat_s=1", "epochs.head=400")
    job_runs(store)  # the store's tables exist before two processes use it
    first = start_cli(*args, cwd=tmp_path)
    client = mlflow.MlflowClient()

    def training() -> bool:
        return not mlflow.search_runs(experiment_names=["default"], filter_string="tags.run_kind = 'regime'").empty

    wait_for(training, what="the first job never started training")
    time.sleep(1)
    stop_outside_a_transaction(first.pid, Path(store.removeprefix("sqlite:///")))
    try:
        time.sleep(6 + 2)
        second = run_cli(*args, cwd=tmp_path)
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    out = first.communicate(timeout=300)[0]
    assert second.returncode == 0 and "frozen   done:" in second.log, second.log[-3000:]
    assert first.returncode == 1, out[-3000:]
    assert "lost its lease" in out and "left KILLED" in out, out[-3000:]
    assert "frozen   done:" not in out  # it stopped training
    jobs = job_runs(store)
    assert sorted(jobs.status) == ["FINISHED", "KILLED"], jobs[["status", "tags.killed_reason"]]
    killed = jobs[jobs.status == "KILLED"].iloc[0]
    assert "no heartbeat" in killed["tags.killed_reason"]
    regimes = mlflow.search_runs(experiment_names=["default"], filter_string="tags.run_kind = 'regime'")
    assert sorted(regimes.status) == ["FINISHED", "KILLED"]
    assert client.get_run(killed.run_id).info.status == "KILLED"


def stop_outside_a_transaction(pgid: int, db: Path) -> None:
    """SIGSTOP a process group at a moment none of it is inside a transaction on the SQLite store `db`.

    A process stopped inside one keeps its lock on the whole file until it resumes, so every other process's
    writes fail ("database is locked"): a limit of SQLite (a server store has no file lock), not of leases,
    which this test is about. Stopped, the group is probed with an exclusive transaction; while one of its
    locks is there, it is resumed for a moment and stopped again."""
    for _ in range(100):
        os.killpg(pgid, signal.SIGSTOP)
        probe = sqlite3.connect(db, timeout=0)
        try:
            probe.execute("BEGIN EXCLUSIVE")
            probe.rollback()
            return
        except sqlite3.OperationalError:
            os.killpg(pgid, signal.SIGCONT)
            time.sleep(0.02)
        finally:
            probe.close()
    raise AssertionError(f"the job was inside a transaction on {db} at each of 100 tries")


def identity_of(store: str, photos, *extra: str, cwd) -> str:
    plan = run_cli(*tiny_job(store, photos, "dry_run=true", *extra), cwd=cwd)
    return plan.log.split("identity=")[1].split()[0]


@pytest.mark.slow  # three CLI runs
def test_running_elsewhere_is_not_success_unless_the_sweep_waits_for_it(tmp_path, store):
    """A configuration held by a live claim of another process: the sweep says so and exits 1; with
    wait_for_others=true it waits, and counts it done once the holder finishes (or trains it if the holder dies)."""
    photos = data.ensure_synthetic(tmp_path / "gen", {"train": 6, "validation": 3, "test": 3})
    identity = identity_of(store, photos, cwd=tmp_path)
    mlflow.set_tracking_uri(store)
    experiment = mlflow.set_experiment("default").experiment_id
    elsewhere = "other-host|another-boot|4026531836|12345|999"
    holder = new_run(experiment, job_identity=identity, run_kind="job", owner=elsewhere, claim_ticket="1", lease_s="60")
    leases.heartbeat.hold(holder, interval_s=1)  # the other process, alive
    try:
        sweep = run_cli("-m", "seed=0", *tiny_job(store, photos), cwd=tmp_path)
        assert sweep.returncode == 1, sweep.log[-3000:]
        assert "1 running elsewhere" in sweep.log and f"held by run(s) {holder}" in sweep.log, sweep.log[-3000:]
        assert "wait_for_others=true" in sweep.log

        waiting = start_cli("-m", "seed=0", *tiny_job(store, photos, "wait_for_others=true"), cwd=tmp_path)
        time.sleep(20)  # it starts and finds the holder
        assert waiting.poll() is None
    finally:
        leases.heartbeat.release(holder)
    mlflow.MlflowClient().set_terminated(holder, "FINISHED")  # the other process finishes it
    out = waiting.communicate(timeout=300)[0]
    assert waiting.returncode == 0, out[-3000:]
    assert "waiting for it (wait_for_others=true)" in out and "1 skipped" in out, out[-3000:]
    assert "frozen   done:" not in out


def test_an_error_between_the_claim_and_training_ends_the_run_failed(tmp_path, store, monkeypatch):
    """No orphan claim: whatever fails after the job run was created (here the cache keys) ends that run FAILED
    with the error, instead of leaving a RUNNING run that the heartbeat keeps alive."""
    photos = data.ensure_synthetic(tmp_path / "gen", {"train": 6, "validation": 3, "test": 3})
    cfg = compose(*tiny_job(store, photos, f"cache_dir={tmp_path / 'cache'}"))

    def broken(job):
        raise OSError("cache keys: disk gone")

    monkeypatch.setattr(jobs, "cache_keys", broken)
    with pytest.raises(OSError, match="disk gone"):
        jobs.run(cfg, [], "orphan")
    runs = job_runs(store)
    assert list(runs.status) == ["FAILED"], runs[["status"]]
    assert "disk gone" in runs["tags.error"].iloc[0]
    assert not leases.heartbeat.runs  # nothing keeps beating for it
