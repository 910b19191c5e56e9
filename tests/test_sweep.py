"""Sweeps that survive: SIGKILL and resume, Ctrl-C, a failing job, parallel jobs on one store, repeatability."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import mlflow
import pytest
from conftest import copy_small, job_rows, run_cli, start_cli, tiny_frozen

pytestmark = pytest.mark.slow


def all_runs(store: str, study: str = "default"):
    mlflow.set_tracking_uri(store)
    return mlflow.search_runs(experiment_names=[study], max_results=1000)


def job_statuses(db: Path) -> dict[str, int]:
    """Job-run counts by status, read straight from SQLite (conftest.job_rows)."""
    return dict(Counter(status for status, _ in job_rows(db)))


@pytest.fixture(scope="module")
def small_data(tmp_path_factory, cats_dogs) -> Path:
    return copy_small(cats_dogs, tmp_path_factory.mktemp("data") / "small")


def test_killed_sweep_resumes_without_redoing_or_duplicating(tmp_path, store, small_data, mobilenet_weights):
    args = ["-m", "seed=0,1,2", *tiny_frozen(mobilenet_weights, store, small_data)]
    proc = start_cli(*args, cwd=tmp_path, output=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:  # kill as soon as one job is done and the next is mid-way
            time.sleep(0.5)
            counts = job_statuses(Path(store.removeprefix("sqlite:///")))
            if counts.get("FINISHED", 0) >= 1 and counts.get("RUNNING", 0) >= 1:
                break
            assert proc.poll() is None, f"the sweep ended before it could be killed: {counts}"
        else:
            pytest.fail("the sweep never reached a state with one job done and one running")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = all_runs(store)
    finished_before = set(before.query("`tags.run_kind` == 'job' and status == 'FINISHED'").run_id)
    assert "RUNNING" in set(before.status)

    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.log[-3000:]
    assert "marked" in again.log and "as KILLED" in again.log
    assert again.log.count("skip: job ") == len(finished_before)
    assert f"{3 - len(finished_before)} finished, {len(finished_before)} skipped" in again.log

    after = all_runs(store)
    assert "RUNNING" not in set(after.status)
    jobs = after[after["tags.run_kind"] == "job"]
    finished = jobs[jobs.status == "FINISHED"]
    assert sorted(finished["tags.seed"]) == ["0", "1", "2"]  # every job done once, none duplicated
    assert finished["tags.job_identity"].is_unique
    assert finished_before <= set(finished.run_id)  # the finished ones were kept, not redone
    assert (jobs.status == "KILLED").sum() >= 1

    forced = run_cli(*args[:2], *tiny_frozen(mobilenet_weights, store, small_data), "force=true", cwd=tmp_path)
    assert forced.returncode == 0 and "skip:" not in forced.log
    assert (all_runs(store).query("`tags.run_kind` == 'job' and `tags.seed` == '0'").status == "FINISHED").sum() == 2


def interrupt_mid_training(args: list[str], cwd: Path, sigterm: bool = False) -> tuple[int, str]:
    """Start the command, press Ctrl-C (SIGINT to its process group, as a terminal does) once its third epoch is
    logged, or with `sigterm` send SIGTERM to its process (as `kill` does), and return its exit status and output."""
    log = cwd / "interrupted.log"
    # as a terminal starts a foreground job: SIGINT at its default, whatever this process inherited (a shell
    # ignores SIGINT in the jobs it starts in the background, and an ignored signal stays ignored across exec)
    with log.open("w") as out:
        proc = start_cli(*args, cwd=cwd, output=out, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 300
        while "epoch   3/" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        if sigterm:
            os.kill(proc.pid, signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        return proc.wait(timeout=120), log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def long_scratch(store: str) -> list[str]:
    """A small-convnet scratch job on synthetic images that trains long enough to be stopped mid-way (at its third
    epoch, a dozen epochs before its end) and short enough that the resumed sweep finishes soon."""
    return [
        "data=synthetic", "backbone=vgg16", "backbone.weights=null", "regimes=[scratch]", "scratch.model=small_convnet",
        "scratch.image_size=64", "epochs.scratch=15", "early_stopping.enabled=false", f"tracking_uri={store}",
    ]  # fmt: skip


def test_ctrl_c_ends_every_run_killed_and_the_same_command_resumes_at_once(tmp_path, store):
    """Ctrl-C mid-training, in a sweep and in a single run: exit 130 with one line and no traceback; the sweep's
    parent run, the job run and its regime run end KILLED and say why (nothing is left RUNNING for a lease to
    expire), so the same command resumes at once, reaping nothing."""
    sweep = ["-m", "seed=0,1", *long_scratch(store)]
    code, log = interrupt_mid_training(sweep, tmp_path)
    assert code == 130 and "Traceback" not in log, log[-3000:]
    assert "sweep: interrupted after 0 of 2 job(s)" in log and "The same command resumes" in log
    runs = all_runs(store)
    assert sorted(runs["tags.run_kind"]) == ["job", "regime", "sweep"]
    assert set(runs.status) == {"KILLED"}
    assert set(runs["tags.interrupted"]) == {"stopped by the user (SIGINT)"}
    assert "tags.killed_reason" not in runs or runs["tags.killed_reason"].isna().all()  # stopped here, not reaped

    again = run_cli(*sweep, cwd=tmp_path)
    assert again.returncode == 0, again.log[-3000:]
    assert "marked" not in again.log and "2 finished, 0 skipped" in again.log  # nothing to reap, nothing lost

    code, log = interrupt_mid_training([*long_scratch(store), "seed=2"], tmp_path)
    assert code == 130 and "Traceback" not in log, log[-3000:]
    assert "stopped by the user (SIGINT): the job's runs are KILLED" in log
    single = all_runs(store).query("`tags.seed` == '2'")
    assert len(single) == 2 and set(single.status) == {"KILLED"}  # its job run and regime run


def test_sigterm_ends_a_sweep_as_ctrl_c_does(tmp_path, store):
    """`kill` (SIGTERM, as SLURM's scancel or a container stop sends) mid-training: exit 143, one line and no
    traceback; the parent run, the job run and its regime run end KILLED tagged with the signal, and the same command
    resumes at once, reaping nothing."""
    sweep = ["-m", "seed=0", *long_scratch(store)]
    code, log = interrupt_mid_training(sweep, tmp_path, sigterm=True)
    assert code == 143 and "Traceback" not in log, log[-3000:]
    assert "sweep: interrupted after 0 of 1 job(s)" in log
    runs = all_runs(store)
    assert sorted(runs["tags.run_kind"]) == ["job", "regime", "sweep"]
    assert set(runs.status) == {"KILLED"}
    assert set(runs["tags.interrupted"]) == {"stopped by SIGTERM (kill, scancel or a container stop)"}

    again = run_cli(*sweep, cwd=tmp_path)
    assert again.returncode == 0, again.log[-3000:]
    assert "marked" not in again.log and "1 finished, 0 skipped" in again.log


def test_a_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path, store, small_data, mobilenet_weights):
    broken = copy_small(small_data, tmp_path / "broken")
    victim = broken / "train" / "cats" / sorted(os.listdir(broken / "train" / "cats"))[0]
    content = bytearray(victim.read_bytes())
    table = content.index(b"\xff\xc4")  # a Huffman table: its structure and the header stay whole, so the scan
    content[table + 5 : table + 20] = b"\xff" * 15  # keeps the file; its code counts are bogus, so decoding fails
    victim.write_bytes(bytes(content))

    proc = run_cli(
        "-m", *tiny_frozen(mobilenet_weights, store, small_data), f"data.path={small_data},{broken}", cwd=tmp_path
    )
    assert proc.returncode == 1, proc.log[-3000:]
    summary = "sweep summary: 1 finished, 0 skipped (already FINISHED in the study), 0 running elsewhere"
    assert f"{summary}, 0 lost their lease, 1 failed" in proc.log
    jobs = all_runs(store).query("`tags.run_kind` == 'job'")
    failed = jobs[jobs.status == "FAILED"]
    assert len(failed) == 1 and (jobs.status == "FINISHED").sum() == 1
    assert victim.name in failed["tags.error"].iloc[0] and "cannot be decoded" in failed["tags.error"].iloc[0]
    client = mlflow.MlflowClient()
    assert "error.txt" in {a.path for a in client.list_artifacts(failed.run_id.iloc[0])}
    sweep = all_runs(store).query("`tags.run_kind` == 'sweep'")
    assert list(sweep.status) == ["FAILED"]


def test_four_parallel_jobs_share_one_sqlite_store(tmp_path, store, small_data, mobilenet_weights):
    proc = run_cli(
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=4",
        "seed=0,1,2,3",
        *tiny_frozen(mobilenet_weights, store, small_data),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.log[-3000:]
    assert "database is locked" not in proc.log
    df = all_runs(store)
    jobs = df[df["tags.run_kind"] == "job"]
    assert sorted(jobs["tags.seed"]) == ["0", "1", "2", "3"]
    assert set(df.status) == {"FINISHED"} and len(df) == 1 + 4 + 4
    expected = str(max(1, (os.cpu_count() or 1) // 4))
    assert set(jobs["tags.threads"]) == {expected}  # 4 jobs share the cores instead of oversubscribing
    assert set(jobs["tags.pid"]).isdisjoint({str(os.getpid())}) and jobs["tags.pid"].nunique() >= 2


def test_same_config_and_seed_give_the_same_result(tmp_path, store, small_data, mobilenet_weights):
    args = tiny_frozen(mobilenet_weights, store, small_data, "data_fraction=0.5", "seed=7")
    for _ in range(2):
        proc = run_cli(*args, "force=true", cwd=tmp_path)
        assert proc.returncode == 0, proc.log[-3000:]
    df = all_runs(store)
    jobs = df[df["tags.run_kind"] == "job"]
    assert jobs["params.data.train_files_hash"].nunique() == 1 and jobs["tags.job_identity"].nunique() == 1
    client = mlflow.MlflowClient()
    runs = df[df["tags.run_kind"] == "regime"].run_id.tolist()
    assert len(runs) == 2
    for metric in ("loss", "acc", "val_loss", "val_acc"):
        a, b = ([m.value for m in client.get_metric_history(r, metric)] for r in runs)
        assert a == b, metric
    assert (
        df.loc[df.run_id == runs[0], "metrics.test_acc"].item()
        == df.loc[df.run_id == runs[1], "metrics.test_acc"].item()
    )


def test_ctrl_c_ends_the_runs_of_workers_a_launcher_killed(tmp_path, store):
    """joblib kills its workers on Ctrl-C before they can close their runs: the sweep ends those runs KILLED
    itself, tagged as interrupted, so the same command resumes at once, reaping nothing."""
    sweep = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1", *long_scratch(store)]
    code, log = interrupt_mid_training(sweep, tmp_path)
    assert code == 130 and "Traceback" not in log, log[-3000:]
    runs = all_runs(store)
    assert sorted(runs["tags.run_kind"]) == ["job", "job", "regime", "regime", "sweep"]
    assert set(runs.status) == {"KILLED"}
    assert set(runs["tags.interrupted"]) == {"stopped by the user (SIGINT)"}

    again = run_cli(*sweep, cwd=tmp_path)
    assert again.returncode == 0, again.log[-3000:]
    assert "marked" not in again.log and "2 finished, 0 skipped" in again.log
