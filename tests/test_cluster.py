"""One study across processes and machines: Ray and submitit launchers, `mlflow server` on PostgreSQL, leases.

Every server is real and listens on 127.0.0.1 inside a network namespace with loopback only (the
`loopback_only` marker): a Ray head, PostgreSQL, `mlflow server` with proxied artifacts.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from conftest import job_runs, run_cli, tiny_job
from servers import free_port, mlflow_server, postgres_bin, postgresql, ray_head

from harness import data

needs_cluster_extra = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None or importlib.util.find_spec("psycopg2") is None,
    reason='needs the [cluster] extra: pip install -e ".[cluster]"',
)
needs_postgres = pytest.mark.skipif(postgres_bin() is None, reason="needs PostgreSQL (apt-get install -y postgresql)")
pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def photos(tmp_path: Path) -> Path:
    return data.ensure_synthetic(tmp_path / "gen", {"train": 6, "validation": 3, "test": 3})


def start_cli(*args: str, cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONUNBUFFERED"] = "1"
    env["HARNESS_CACHE_DIR"] = str(cwd / "cache")
    return subprocess.Popen(
        [sys.executable, "-m", "harness", *args], cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def story(log: str) -> str:
    """The harness's and Hydra's own lines of a CLI log (not TensorFlow's or Ray's start-up noise)."""
    keep = ("[HYDRA]", "[harness", "Error", "error", "Retrying", "lost")
    return "\n".join(line for line in log.splitlines() if any(k in line for k in keep))[-6000:]


def wait_for_heartbeat(uri: str, timeout_s: float = 300) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        jobs = job_runs(uri)
        if len(jobs) and "tags.heartbeat" in jobs and jobs["tags.heartbeat"].notna().any():
            return jobs[jobs["tags.heartbeat"].notna()].iloc[0]
        time.sleep(0.5)
    raise TimeoutError("no job started")


@needs_cluster_extra
@needs_postgres
@pytest.mark.loopback_only
def test_ray_sweep_into_a_tracking_server_on_postgresql(tmp_path):
    """4 jobs as Ray tasks on a real head, recorded through `mlflow server` on PostgreSQL; artifacts and
    the report come back through the server."""
    with postgresql() as backend, mlflow_server(backend, tmp_path / "artifacts") as server, ray_head() as head:
        sweep = run_cli(
            "-m", "hydra/launcher=ray", f"hydra.launcher.ray.init.address={head}", "seed=0,1,2,3",
            *tiny_job(server.url, photos(tmp_path), "log_model=true", f"cache_dir={tmp_path / 'cache'}"),
            cwd=tmp_path,
        )  # fmt: skip
        assert sweep.returncode == 0, story(sweep.log)
        assert "sweep summary: 4 finished" in sweep.log
        jobs = job_runs(server.url)
        assert sorted(jobs["tags.seed"]) == ["0", "1", "2", "3"] and set(jobs.status) == {"FINISHED"}

        run_id = jobs.run_id.iloc[0]
        config = Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path="config.yaml", dst_path=str(tmp_path / "back")
            )
        )
        assert f"tracking_uri: {server.url}" in config.read_text()
        regime = mlflow.search_runs(experiment_names=["default"], filter_string="tags.run_kind = 'regime'")
        import harness.regimes  # noqa: F401 - registers the model's own layers, as any user of the model does

        model = mlflow.keras.load_model(f"runs:/{regime.run_id.iloc[0]}/model")
        assert model.input_shape[1:3] == (32, 32)
        assert list((tmp_path / "artifacts").glob("**/MLmodel")), "the model did not reach the server's artifact store"

        report = run_cli(
            "study=default",
            f"tracking_uri={server.url}",
            f"out={tmp_path / 'report'}",
            cwd=tmp_path,
            module="harness.report",
        )
        assert report.returncode == 0, report.log[-3000:]
        assert "used 4 finished regime run(s) in 1 configuration(s)" in report.log, report.log[-3000:]
        assert (tmp_path / "report" / "results.csv").is_file()


@needs_cluster_extra
@pytest.mark.loopback_only
def test_a_ray_job_killed_mid_sweep_is_reaped_and_finished_by_the_rerun(tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    lease = ["lease_s=30", "heartbeat_s=1", "epochs.head=300", f"cache_dir={tmp_path / 'cache'}"]
    job_runs(store)  # create the store's tables before two processes use it
    with ray_head() as head:
        args = ["-m", "hydra/launcher=ray", f"hydra.launcher.ray.init.address={head}", "seed=0,1",
                *tiny_job(store, photos(tmp_path), *lease)]  # fmt: skip
        sweep = start_cli(*args, cwd=tmp_path)
        victim = wait_for_heartbeat(store)
        pid = int(victim["tags.owner"].split("|")[3])
        time.sleep(1)
        os.kill(pid, signal.SIGKILL)  # the Ray worker process running this job
        out = sweep.communicate(timeout=600)[0]
        assert sweep.returncode == 1, out[-5000:]
        assert "1 missing" in out and f"job(s) {victim['tags.seed']} recorded no outcome" in out, out[-5000:]

        rerun = run_cli(*args, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.log[-5000:]
    assert "1 finished, 1 skipped" in rerun.log, rerun.log[-3000:]
    jobs = job_runs(store)
    assert sorted(jobs.status) == ["FINISHED", "FINISHED", "KILLED"]
    killed = jobs[jobs.status == "KILLED"].iloc[0]
    assert killed["tags.seed"] == victim["tags.seed"]
    # reaped at once because its process on this host is gone, or by its lease if the rerun came later
    assert "has exited" in killed["tags.killed_reason"] or "no heartbeat" in killed["tags.killed_reason"]
    assert sorted(jobs[jobs.status == "FINISHED"]["tags.seed"]) == ["0", "1"]


@needs_cluster_extra
@needs_postgres
@pytest.mark.loopback_only
def test_two_sweeps_at_once_through_a_tracking_server_run_each_configuration_once(tmp_path):
    with postgresql() as backend, mlflow_server(backend, tmp_path / "artifacts") as server:
        args = ["-m", "seed=0,1,2", *tiny_job(server.url, photos(tmp_path))]
        procs = [start_cli(*args, cwd=tmp_path) for _ in range(2)]
        logs = [p.communicate(timeout=600)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], "\n".join(log[-3000:] for log in logs)
        jobs = job_runs(server.url)
    finished = jobs[jobs.status == "FINISHED"]
    assert sorted(finished["tags.seed"]) == ["0", "1", "2"] and "RUNNING" not in set(jobs.status)
    both = "".join(logs)
    assert both.count("frozen   done:") == 3, both[-4000:]


@needs_cluster_extra
@needs_postgres
@pytest.mark.loopback_only
def test_a_sweep_rides_out_a_restart_of_the_tracking_server(tmp_path):
    with postgresql() as backend, mlflow_server(backend, tmp_path / "artifacts") as server:
        sweep = start_cli("-m", "seed=0,1", *tiny_job(server.url, photos(tmp_path), "epochs.head=40"), cwd=tmp_path)
        wait_for_heartbeat(server.url)
        server.stop()
        time.sleep(3)  # the sweep's requests meet a closed port meanwhile and are retried
        server.start()
        out = sweep.communicate(timeout=600)[0]
        assert sweep.returncode == 0, out[-5000:]
        assert "Retrying" in out, out[-3000:]  # the retries are logged
        jobs = job_runs(server.url)
    assert sorted(jobs["tags.seed"]) == ["0", "1"] and set(jobs.status) == {"FINISHED"}


@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
    reason='needs the [cluster] extra: pip install -e ".[cluster]"',
)
def test_a_submitit_local_sweep(tmp_path, store):
    """The SLURM path's launcher, with local processes standing in for the cluster's nodes."""
    proc = run_cli("-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", "seed=0,1",
                   *tiny_job(store, photos(tmp_path)), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.log[-5000:]
    assert "sweep summary: 2 finished" in proc.log
    jobs = job_runs(store)
    assert sorted(jobs["tags.seed"]) == ["0", "1"] and set(jobs.status) == {"FINISHED"}


@needs_cluster_extra
@pytest.mark.loopback_only
def test_an_unreachable_ray_address_stops_the_sweep_before_anything_is_recorded(tmp_path, store):
    nowhere = f"127.0.0.1:{free_port()}"  # nothing listens there
    proc = run_cli("-m", "hydra/launcher=ray", f"hydra.launcher.ray.init.address={nowhere}", "seed=0,1",
                   *tiny_job(store, photos(tmp_path)), cwd=tmp_path, timeout=300)  # fmt: skip
    assert proc.returncode == 2, story(proc.log)
    assert f"hydra.launcher.ray.init.address='{nowhere}': no Ray head answers there" in proc.log
    assert "Traceback" not in proc.log
    assert job_runs(store).empty and mlflow.search_runs(experiment_names=["default"]).empty  # no sweep run either
