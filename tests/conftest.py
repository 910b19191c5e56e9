"""Shared fixtures: the real data and weights beside the project, a temporary MLflow store, a CLI runner."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from servers import only_loopback

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared").resolve()
CATS_DOGS = SHARED / "data" / "cats_and_dogs_small"
MOBILENET_WEIGHTS = SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """A test marked `loopback_only` runs in a network namespace with loopback only: this hook re-runs it
    there (`unshare -n`, `ip link set lo up`, then the same test id), so a Ray head, a server or a download
    attempt cannot reach any other address. Inside the namespace it runs as usual."""
    if pyfuncitem.get_closest_marker("loopback_only") is None or only_loopback():
        return None
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a loopback-only network namespace needs root and unshare (CI runs as root)")
    inner = f"ip link set lo up && exec {shlex.quote(sys.executable)} -m pytest -q -p no:cacheprovider -x "
    inner += shlex.quote(pyfuncitem.nodeid)
    proc = subprocess.run(["unshare", "-n", "sh", "-c", inner], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    if proc.returncode != 0:
        pytest.fail(
            f"in a loopback-only network namespace:\n{proc.stdout[-8000:]}\n{proc.stderr[-2000:]}", pytrace=False
        )
    if "passed" not in summary:
        pytest.skip(f"in a loopback-only network namespace: {summary}")
    return True


def compose(*overrides: str):
    """The config `python -m harness <overrides>` would run, composed in-process (Hydra's compose API)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from harness.paths import conf_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


@pytest.fixture(scope="session")
def cats_dogs() -> Path:
    if not (CATS_DOGS / "train").is_dir():
        pytest.skip(f"real data absent: {CATS_DOGS} (the shared/ folder beside the checkout)")
    return CATS_DOGS


@pytest.fixture(scope="session")
def mobilenet_weights() -> Path:
    if not MOBILENET_WEIGHTS.is_file():
        pytest.skip(f"real MobileNetV2 weights absent: {MOBILENET_WEIGHTS}")
    return MOBILENET_WEIGHTS


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A fresh SQLite MLflow store (absolute URI) in the test's temporary folder."""
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


def cli_env(cwd: Path) -> dict[str, str]:
    """The environment a test runs the CLI in: no tracking URI of the caller's, unbuffered output, and a cache
    of the test's own (never the project's)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("HARNESS_CACHE_DIR", str(cwd / "cache"))
    return env


def run_cli(
    *args: str, cwd: Path, module: str = "harness", timeout: int = 900, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m <module> args...` in `cwd` (not the project root: it must work from anywhere); `env`: more
    environment variables."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env={**cli_env(cwd), **(env or {})}, capture_output=True,
        text=True, timeout=timeout,
    )  # fmt: skip
    proc.log = proc.stdout + proc.stderr  # type: ignore[attr-defined]
    return proc


def start_cli(*args: str, cwd: Path, output: Any = subprocess.PIPE, **popen: Any) -> subprocess.Popen:
    """Start `python -m harness args...` in `cwd` in a process group of its own (so a test can stop, signal or
    kill the whole job), output merged into one text pipe (or `output`: a file, DEVNULL); `popen`: more of
    `subprocess.Popen`'s arguments."""
    return subprocess.Popen(
        [sys.executable, "-m", "harness", *args], cwd=cwd, env=cli_env(cwd), text=True,
        stdout=output, stderr=subprocess.STDOUT, start_new_session=True, **popen,
    )  # fmt: skip


def job_rows(db: Path) -> list[tuple[str, str]]:
    """(status, pid) of every job run, read straight from a SQLite store while a sweep writes it: polling
    through MLflow would initialise a store in this process while the harness may still create the schema."""
    if not db.exists():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as con:
            return con.execute(
                "SELECT r.status, p.value FROM runs r JOIN tags k ON k.run_uuid = r.run_uuid "
                "JOIN tags p ON p.run_uuid = r.run_uuid "
                "WHERE k.key = 'run_kind' AND k.value = 'job' AND p.key = 'pid'"
            ).fetchall()
    except sqlite3.OperationalError:  # tables not created yet, or a write holds the lock
        return []


def small_mobilenet(weights: Path, store: str, *extra: str) -> list[str]:
    """Overrides for a real but small MobileNetV2 study on the shared cats/dogs photographs."""
    return [
        "data=cats_and_dogs_small",
        "backbone=mobilenetv2",
        f"backbone.weights={weights}",
        "backbone.image_size=96",
        "data_fraction=0.1",
        "epochs.scratch=1",
        "epochs.head=1",
        "epochs.finetune=1",
        "head_lr=1e-3",
        "lr=1e-4",
        f"tracking_uri={store}",
        *extra,
    ]


def copy_small(src: Path, dst: Path, per_class: dict[str, int] | None = None) -> Path:
    """A small real copy of a data folder (first N files of each class), safe to damage in a test."""
    per_class = per_class or {"train": 20, "validation": 10, "test": 10}
    for split, n in per_class.items():
        for class_dir in sorted(p for p in (src / split).iterdir() if p.is_dir()):
            out = dst / split / class_dir.name
            out.mkdir(parents=True)
            for f in sorted(class_dir.iterdir())[:n]:
                (out / f.name).write_bytes(f.read_bytes())
    return dst


def tiny_frozen(weights: Path, store: str, data_path: Path, *extra: str) -> list[str]:
    """Overrides for the cheapest real job: frozen MobileNetV2 at 64 px on a small real folder."""
    return [
        "backbone=mobilenetv2",
        f"backbone.weights={weights}",
        "backbone.image_size=64",
        "regimes=[frozen]",
        "epochs.head=2",
        "head_lr=1e-3",
        "data=folder",
        f"data.path={data_path}",
        f"tracking_uri={store}",
        *extra,
    ]


def tiny_job(store: str, photos: Path, *extra: str) -> list[str]:
    """Overrides for the cheapest job there is: frozen random-init MobileNetV2 at 32 px on generated images
    (no ../shared needed); for what is tested about runs, not about learning."""
    return [
        "data=folder",
        f"data.path={photos}",
        "backbone=mobilenetv2",
        "backbone.weights=null",
        "backbone.image_size=32",
        "regimes=[frozen]",
        "epochs.head=1",
        f"tracking_uri={store}",
        *extra,
    ]


def job_runs(uri: str, study: str = "default"):
    """The job runs of a study (one per Hydra job), as MLflow's search returns them."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[study], filter_string="tags.run_kind = 'job'")


@contextlib.contextmanager
def tmpfs(folder: Path, size: str):
    """A real filesystem of `size` (tmpfs) mounted at `folder` for the block: a full disk without pretending."""
    folder.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {made.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A real 2 MB filesystem (tmpfs), mounted for the test."""
    with tmpfs(tmp_path / "disk", "2m") as mount:
        yield mount
