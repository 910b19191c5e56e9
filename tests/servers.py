"""Real servers for the cluster tests, on 127.0.0.1 only, started and stopped by the tests with bounded waits:
PostgreSQL (Debian's binaries), `mlflow server` on it with proxied artifacts, and a Ray head.

Run them inside a network namespace with loopback only (the `loopback_only` marker in conftest.py does it):
Ray rewrites 127.0.0.1 to the machine's interface address, and nothing here may reach another address.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_until(ready: Callable[[], bool], timeout_s: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.3)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise TimeoutError(f"{what} not ready within {timeout_s:.0f} s\n{tail}")


def only_loopback() -> bool:
    """Whether this process's network namespace has no interface but `lo`."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def postgres_bin() -> Path | None:
    """Debian keeps the server binaries out of PATH, under /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


def _as_postgres_user() -> list[str]:
    """initdb and postgres refuse to run as root: run them as Debian's `postgres` user then."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@contextmanager
def postgresql() -> Iterator[str]:
    """A throw-away PostgreSQL cluster on 127.0.0.1: yields the SQLAlchemy URI of an empty database."""
    import psycopg2

    bindir = postgres_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL server binaries not found (Debian: apt-get install -y postgresql)")
    root = Path(tempfile.mkdtemp(prefix="harness-pg-"))
    root.chmod(0o777)
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    runas = _as_postgres_user()
    subprocess.run(
        [*runas, str(bindir / "initdb"), "-D", str(data), "-U", "harness", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = free_port()
    log = root / "postgres.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [*runas, str(bindir / "postgres"), "-D", str(data), "-h", HOST, "-p", str(port), "-k", str(root)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def ready() -> bool:
        try:
            psycopg2.connect(host=HOST, port=port, user="harness", dbname="postgres", connect_timeout=2).close()
            return True
        except psycopg2.OperationalError:
            return False

    try:
        wait_until(ready, 120, "PostgreSQL", log)
        con = psycopg2.connect(host=HOST, port=port, user="harness", dbname="postgres")
        con.autocommit = True
        con.cursor().execute("CREATE DATABASE mlflow")
        con.close()
        yield f"postgresql+psycopg2://harness@{HOST}:{port}/mlflow"  # the driver the [cluster] extra installs
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
        shutil.rmtree(root, ignore_errors=True)


def server_env() -> dict[str, str]:
    """MLflow's server without its job runner (GenAI jobs, three huey consumers with 20 workers): the harness
    uses none of it, and on 2 cores the workers slow every test that starts a server."""
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@dataclass
class MlflowServer:
    """`mlflow server` on a PostgreSQL backend store with proxied artifacts; can be stopped and restarted."""

    backend_uri: str
    artifacts: Path
    port: int = field(default_factory=free_port)
    log: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="harness-mlflow-")) / "server.log")
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout_s: float = 300) -> None:
        cmd = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", self.backend_uri,
            "--serve-artifacts", "--artifacts-destination", self.artifacts.as_uri(),
            "--host", HOST, "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=server_env()
            )
        wait_until(self.healthy, timeout_s, "mlflow server", self.log)

    def healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited:\n{self.log.read_text()[-3000:]}")
        try:
            return requests.get(f"{self.url}/health", timeout=2).ok
        except requests.RequestException:
            return False

    def stop(self) -> None:
        if self.proc is None:
            return
        os.killpg(self.proc.pid, 15)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(10)
        self.proc = None


@contextmanager
def mlflow_server(backend_uri: str, artifacts: Path) -> Iterator[MlflowServer]:
    server = MlflowServer(backend_uri, artifacts)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def ray_head(num_cpus: int = 2, env: dict[str, str] | None = None) -> Iterator[str]:
    """A Ray head on 127.0.0.1 (no dashboard, a small object store); yields its address `host:port`."""
    ray = str(Path(sys.executable).parent / "ray")
    port = free_port()
    temp = Path(tempfile.mkdtemp(prefix="harness-ray-"))
    start = [
        ray, "start", "--head", f"--node-ip-address={HOST}", f"--port={port}", f"--num-cpus={num_cpus}",
        "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}",
        "--object-store-memory=200000000",
    ]  # fmt: skip
    proc = subprocess.run(start, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"ray start failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    try:
        yield f"{HOST}:{port}"
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120)
        shutil.rmtree(temp, ignore_errors=True)


@contextmanager
def mlflow_ui(*options: str, timeout_s: float = 300) -> Iterator[str]:
    """`mlflow ui <options>` (e.g. the store options a sweep prints) on 127.0.0.1 at a free port, one worker;
    yields its base URL and stops it (its whole process group) on the way out."""
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="harness-mlflow-ui-"))
    log = folder / "ui.log"
    cmd = [sys.executable, "-m", "mlflow", "ui", *options, "--host", HOST, "--port", str(port), "--workers", "1"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=server_env())
    url = f"http://{HOST}:{port}"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow ui exited:\n{log.read_text()[-3000:]}")
        try:
            return requests.get(f"{url}/health", timeout=2).ok
        except requests.RequestException:
            return False

    try:
        wait_until(healthy, timeout_s, "mlflow ui", log)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
