"""Shared fixtures: the real data and weights beside the project, a temporary MLflow store, a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared").resolve()
CATS_DOGS = SHARED / "data" / "cats_and_dogs_small"
MOBILENET_WEIGHTS = SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"


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


def run_cli(*args: str, cwd: Path, module: str = "harness", timeout: int = 900) -> subprocess.CompletedProcess:
    """Run `python -m <module> args...` in `cwd` (not the project root: it must work from anywhere)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("HARNESS_CACHE_DIR", str(cwd / "cache"))  # each test its own cache, never the project's
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    proc.log = proc.stdout + proc.stderr  # type: ignore[attr-defined]
    return proc


def small_mobilenet(weights: Path, store: str, *extra: str) -> list[str]:
    """Overrides for a real but small MobileNetV2 study on the shared cats/dogs photographs."""
    return [
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
