"""The package as a user installs it: configs from conf/ travel in the wheel, `python -m harness` runs anywhere."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT


@pytest.mark.slow  # builds a wheel: about a minute
def test_an_installed_wheel_runs_from_any_folder_with_the_configs_it_carries(tmp_path):
    wheels, site, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next(wheels.glob("harness-*.whl"))
    install = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                              str(wheel)], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONUNBUFFERED": "1"}  # the wheel's harness, not the checkout's
    env.pop("MLFLOW_TRACKING_URI", None)
    where = subprocess.run(
        [sys.executable, "-c", "import harness, harness.conf; print(harness.__file__); print(harness.conf.__file__)"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert where.stdout.split() == [
        str(site / "harness" / "__init__.py"),
        str(site / "harness" / "conf" / "__init__.py"),
    ]
    shipped = {p.relative_to(site / "harness" / "conf") for p in (site / "harness" / "conf").rglob("*.yaml")}
    assert shipped == {p.relative_to(ROOT / "conf") for p in (ROOT / "conf").rglob("*.yaml")}  # every config
    run = subprocess.run(
        [sys.executable, "-m", "harness", "-m", "+experiment=quickstart", "dry_run=true", "seed=0,1",
         f"tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", f"cache_dir={tmp_path / 'cache'}"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    log = run.stdout + run.stderr
    assert run.returncode == 0 and "Traceback" not in log, log[-3000:]
    assert "job 0:" in log and "job 1:" in log and "total: est." in log  # the sweeper plugin came with it too
