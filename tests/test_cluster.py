"""One study across processes and machines: Ray and submitit launchers, `mlflow server` on PostgreSQL, leases.

Every server is real and listens on 127.0.0.1 inside a network namespace with loopback only (the
`loopback_only` marker): a Ray head, PostgreSQL, `mlflow server` with proxied artifacts.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import time
from pathlib import Path

import mlflow
import pytest
from conftest import job_runs, run_cli, start_cli, tiny_job
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
    """Two jobs as Ray tasks on a real head (two CPUs: at once), recorded through `mlflow server` on PostgreSQL;
    artifacts and the report come back through the server."""
    with postgresql() as backend, mlflow_server(backend, tmp_path / "artifacts") as server, ray_head() as head:
        sweep = run_cli(
            "-m", "hydra/launcher=ray", f"hydra.launcher.ray.init.address={head}", "seed=0,1",
            *tiny_job(server.url, photos(tmp_path), "log_model=true", f"cache_dir={tmp_path / 'cache'}"),
            cwd=tmp_path,
        )  # fmt: skip
        assert sweep.returncode == 0, story(sweep.log)
        assert "sweep summary: 2 finished" in sweep.log
        jobs = job_runs(server.url)
        assert sorted(jobs["tags.seed"]) == ["0", "1"] and set(jobs.status) == {"FINISHED"}

        run_id = jobs.run_id.iloc[0]
        config = Path(
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path="config.yaml", dst_path=str(tmp_path / "back")
            )
        )
        assert f"tracking_uri: {server.url}" in config.read_text()
        regime = mlflow.search_runs(experiment_names=["default"], filter_string="tags.run_kind = 'regime'")
        import harness.training.models  # noqa: F401 - registers the model's own layers, as the README tells users

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
        assert "used 2 finished regime run(s) in 1 configuration(s)" in report.log, report.log[-3000:]
        assert (tmp_path / "report" / "results.csv").is_file()


@needs_cluster_extra
@pytest.mark.loopback_only
def test_a_ray_job_killed_mid_sweep_is_reaped_and_finished_by_the_rerun(tmp_path):
    lease = ["lease_s=30", "heartbeat_s=1", "epochs.head=300", f"cache_dir={tmp_path / 'cache'}"]
    backend = f"sqlite:///{tmp_path / 'mlflow.db'}"  # a server on SQLite: every Ray worker reaches it
    with mlflow_server(backend, tmp_path / "artifacts") as server, ray_head() as head:
        store = server.url
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
        jobs = job_runs(store)
    assert rerun.returncode == 0, rerun.log[-5000:]
    assert "1 finished, 1 skipped" in rerun.log, rerun.log[-3000:]
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
        args = ["-m", "seed=0,1,2", *tiny_job(server.url, photos(tmp_path), "wait_for_others=true")]
        procs = [start_cli(*args, cwd=tmp_path) for _ in range(2)]
        logs = [p.communicate(timeout=600)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], "\n".join(log[-3000:] for log in logs)
        jobs = job_runs(server.url)
    finished = jobs[jobs.status == "FINISHED"]
    assert sorted(finished["tags.seed"]) == ["0", "1", "2"] and "RUNNING" not in set(jobs.status)
    both = "".join(logs)
    assert both.count("frozen   done:") == 3, both[-4000:]
    assert both.count("skip: job") == 3  # each sweep accounts for all three: trained, or done by the other


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
def test_an_unreachable_ray_address_stops_the_sweep_before_anything_is_recorded(tmp_path):
    nowhere = f"127.0.0.1:{free_port()}"  # nothing listens there
    store = f"http://127.0.0.1:{free_port()}"  # a server's address (Ray needs one); nothing may reach it either
    proc = run_cli("-m", "hydra/launcher=ray", f"hydra.launcher.ray.init.address={nowhere}", "seed=0,1",
                   *tiny_job(store, photos(tmp_path)), cwd=tmp_path, timeout=300)  # fmt: skip
    assert proc.returncode == 2, story(proc.log)
    assert f"hydra.launcher.ray.init.address='{nowhere}': no Ray head answers there" in proc.log
    assert "Traceback" not in proc.log and "MLflow parent run" not in proc.log  # stopped before the store


@needs_cluster_extra
@pytest.mark.parametrize("launcher", ["ray", "slurm"])
def test_a_multi_node_launcher_refuses_a_store_that_is_a_local_file(tmp_path, launcher):
    """Without tracking_uri, each Ray worker or SLURM node would write a SQLite file of its own: refused before
    any job starts (no Ray head or SLURM needed to find that out), with the fix in the message."""
    proc = run_cli("-m", f"hydra/launcher={launcher}", "seed=0,1", *tiny_job("", photos(tmp_path))[:-1],
                   cwd=tmp_path, timeout=300)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.log, proc.log[-3000:]
    assert f"hydra/launcher={launcher} runs jobs on other machines" in proc.log, proc.log[-3000:]
    assert "is a file on this one" in proc.log and "tracking_uri=http://<host>:5000" in proc.log
    assert not (tmp_path / "mlruns").exists() and not list(tmp_path.rglob("mlflow.db"))


@needs_cluster_extra
@pytest.mark.loopback_only
def test_credentials_in_the_tracking_uri_reach_no_param_tag_artifact_report_or_log(tmp_path):
    """A sweep and its report through `mlflow server` with a password in the URI (the server ignores it; it
    stands for one behind an authenticating proxy or MLflow's basic-auth app): the password is in none of the
    store's rows (the SQLite file, searched byte by byte), none of the artifacts, none of the report's files and
    none of the console output."""
    secret = "s3cr3t-PASSWORD"
    backend = tmp_path / "store" / "mlflow.db"
    backend.parent.mkdir()
    with mlflow_server(f"sqlite:///{backend}", tmp_path / "artifacts") as server:
        uri = server.url.replace("http://", f"http://harness:{secret}@")
        sweep = run_cli("-m", "seed=0,1", *tiny_job(uri, photos(tmp_path), "log_model=true"), cwd=tmp_path)
        report = run_cli("study=default", f"tracking_uri={uri}", f"out={tmp_path / 'report'}", cwd=tmp_path,
                         module="harness.report")  # fmt: skip
        failing = run_cli(*tiny_job(uri.replace(str(server.port), str(free_port())), photos(tmp_path)), cwd=tmp_path)
    assert sweep.returncode == 0 and report.returncode == 0, sweep.log[-3000:] + report.log[-3000:]
    assert failing.returncode == 2 and "no MLflow server answers there" in failing.log  # an error message
    assert "harness:***@" in sweep.log and "harness:***@" in failing.log  # the URI is shown, masked
    for log in (sweep.log, report.log, failing.log):
        assert secret not in log
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    # Hydra's own record of each job keeps the command line as typed (its overrides.yaml), as a shell history does:
    # the README says to prefer MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD
    leaks = [p for p in leaks if p.parent.name != ".hydra"]
    assert leaks == [], leaks
    assert list((tmp_path / "artifacts").rglob("config.yaml")) and (tmp_path / "report" / "summary.json").is_file()


@needs_cluster_extra
@needs_postgres
@pytest.mark.loopback_only
def test_a_tracking_server_that_stops_answering_past_the_lease_loses_and_repeats_nothing(tmp_path):
    """SIGSTOP the server (every process of it) for longer than the jobs' lease while a sweep trains, then let
    it go on: requests wait, MLflow's client retries, no one reaps the live jobs (a reaper would be fenced
    out: its mark voids the holder's FINISHED), and every configuration ends FINISHED exactly once."""
    lease = ["lease_s=9", "heartbeat_s=3", "epochs.head=150"]
    with postgresql() as backend, mlflow_server(backend, tmp_path / "artifacts") as server:
        sweep = start_cli("-m", "seed=0,1", *tiny_job(server.url, photos(tmp_path), *lease), cwd=tmp_path)
        wait_for_heartbeat(server.url)
        os.killpg(server.proc.pid, signal.SIGSTOP)
        time.sleep(9 + 6)
        os.killpg(server.proc.pid, signal.SIGCONT)
        out = sweep.communicate(timeout=600)[0]
        jobs = job_runs(server.url)
        regimes = mlflow.search_runs(experiment_names=["default"], filter_string="tags.run_kind = 'regime'")
    assert sweep.returncode == 0, story(out)
    assert "sweep summary: 2 finished" in out, story(out)
    assert sorted(jobs["tags.seed"]) == ["0", "1"] and set(jobs.status) == {"FINISHED"}
    assert "tags.killed_reason" not in jobs or jobs["tags.killed_reason"].isna().all()
    assert len(regimes) == 2 and set(regimes.status) == {"FINISHED"}
