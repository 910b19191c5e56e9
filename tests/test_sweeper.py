"""The harness sweeper (hydra/sweeper=harness): expansion, the plan, the memory budget, missing jobs, other
sweepers. Generated images and random weights: nothing here needs ../shared."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import mlflow
import pytest
from conftest import job_rows, run_cli, start_cli, tiny_job, tmpfs
from hydra.core.override_parser.overrides_parser import OverridesParser

from harness import data
from harness.sweep.lifecycle import expand


@pytest.fixture
def photos(tmp_path) -> Path:
    return data.ensure_synthetic(tmp_path / "gen", {"train": 6, "validation": 3, "test": 3})


def test_expansion_is_the_cartesian_product_in_command_line_order():
    parsed = OverridesParser.create().parse_overrides(["seed=range(0,2)", "lr=1e-4,1e-3", "study=s", "head=gap"])
    assert expand(parsed) == [  # values as Hydra's basic sweeper writes them (1e-4 parsed: 0.0001)
        ["seed=0", "lr=0.0001", "study=s", "head=gap"],
        ["seed=0", "lr=0.001", "study=s", "head=gap"],
        ["seed=1", "lr=0.0001", "study=s", "head=gap"],
        ["seed=1", "lr=0.001", "study=s", "head=gap"],
    ]


def test_dry_run_of_a_single_job_prints_its_plan_and_trains_nothing(tmp_path, store, photos):
    proc = run_cli(*tiny_job(store, photos, "regimes=[frozen,finetune]", "dry_run=true"), cwd=tmp_path)
    assert proc.returncode == 0, proc.log[-3000:]
    assert "job 0:" in proc.log and "head phase build" in proc.log and "features@block_11_expand (" in proc.log
    assert "frozen   epoch" not in proc.log and "done:" not in proc.log
    mlflow.set_tracking_uri(store)
    assert mlflow.search_runs(search_all_experiments=True).empty


def test_a_job_whose_cut_would_not_fit_on_the_disk_stops_the_sweep_before_any_job(tmp_path, store, photos):
    """On a 400 kB cache filesystem, for 24 images at 32 px: block_1_expand (16x16x16 floats, 393 kB) does not fit
    beside the images (74 kB); block_16_expand (15 kB) with the pooled cut (123 kB) does."""
    with tmpfs(tmp_path / "disk", "400k") as disk:
        proc = run_cli(
            "-m",
            *tiny_job(store, photos, "regimes=[frozen,finetune]", "unfreeze_at=block_16_expand,block_1_expand"),
            f"cache_dir={disk / 'cache'}",
            cwd=tmp_path,
        )
        assert proc.returncode == 2, proc.log[-3000:]
        assert "1 of 2 job(s) cannot run" in proc.log
        assert re.search(r"has 0\.\d MB free on its filesystem, and this job would write 0\.6 MB", proc.log), proc.log
        assert "features@block_1_expand 0.4 MB" in proc.log and "Traceback" not in proc.log
        assert not any(disk.rglob("*.npy"))
    assert not Path(store.removeprefix("sqlite:///")).exists()  # nothing recorded


def job_runs_by_status(db: Path) -> dict[str, list[str]]:
    """pid tags of job runs by status, read straight from SQLite while the sweep writes (conftest.job_rows)."""
    out: dict[str, list[str]] = {}
    for status, pid in job_rows(db):
        out.setdefault(status, []).append(pid)
    return out


@pytest.mark.slow  # a two-job sweep trains
def test_a_job_whose_worker_dies_is_counted_missing_and_fails_the_sweep(tmp_path, store, photos):
    """A joblib worker killed mid-job (as the kernel's OOM killer would) leaves no outcome in the ledger."""
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1"]
    args += tiny_job(store, photos, "epochs.head=30")
    proc = start_cli(*args, cwd=tmp_path)
    db = Path(store.removeprefix("sqlite:///"))
    deadline = time.monotonic() + 300
    victim = None
    while victim is None and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
        running = job_runs_by_status(db).get("RUNNING", [])
        victim = int(running[0]) if running else None
    assert victim is not None, "no job was seen running"
    os.kill(victim, signal.SIGKILL)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out[-3000:]
    assert "missing" in out and "recorded no outcome" in out and "Traceback" not in out
    mlflow.set_tracking_uri(store)
    sweep = mlflow.search_runs(experiment_names=["default"], filter_string="tags.run_kind = 'sweep'")
    assert list(sweep.status) == ["FAILED"] and sweep["tags.missing_jobs"].iloc[0]
    description = sweep["tags.mlflow.note.content"].iloc[0]  # what the MLflow UI shows as the run's description
    assert "Sweep of 2 job(s)" in description and "python -m harness -m hydra/launcher=joblib" in description


def test_a_search_that_would_minimise_is_refused_once_before_any_trial(tmp_path, store):
    """Optuna's own default direction (minimise) would search for the worst model: the multirun stops as it starts
    (a Hydra callback), exit 2, one message, no trial run and nothing recorded."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="hydra-optuna-sweeper is not installed")
    args = ["hydra.sweeper.n_trials=3", "lr=interval(1e-5,1e-3)", "+experiment=quickstart", f"tracking_uri={store}"]
    refused = run_cli("-m", "hydra/sweeper=optuna", *args, cwd=tmp_path)
    assert refused.returncode == 2, refused.log[-3000:]
    assert refused.log.count("direction=minimize") == 1 and "hydra/sweeper=search" in refused.log
    assert "Traceback" not in refused.log and "Launching" not in refused.log
    assert not Path(store.removeprefix("sqlite:///")).exists()


@pytest.mark.slow  # three quickstart trials without scratch (the fine-tuning rate is searched), about a minute
def test_a_search_sweeper_reports_the_trial_with_the_best_validation_accuracy(tmp_path, store):
    """Optuna's sweeper drives the jobs and each returns its best validation accuracy: the project's sweeper config
    (hydra/sweeper=search) maximises it, so the best trial Optuna reports is the one whose jobs validated best."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="hydra-optuna-sweeper is not installed")
    # Optuna's grid sampler tries each rate once, in its own order: a random draw from an interval can land every
    # trial where fine-tuning collapses to 50%, and then there is no choice to check.
    search = [
        "hydra/sweeper/sampler=grid",
        "hydra.sweeper.n_trials=3",
        "lr=choice(3e-5,1e-4,1e-2)",
        "+experiment=quickstart",
        "regimes=[frozen,finetune]",  # scratch does not use the searched rate
        f"tracking_uri={store}",
    ]
    proc = run_cli("-m", "hydra/sweeper=search", *search, cwd=tmp_path)
    assert proc.returncode == 0, proc.log[-3000:]
    assert "hydra/sweeper=search: jobs are not checked before the sweep" in proc.log
    best = float(re.search(r"Best value: ([\d.]+)", proc.log).group(1))
    best_lr = float(re.search(r"Best parameters: \{'lr': ([\d.e-]+)\}", proc.log).group(1))
    mlflow.set_tracking_uri(store)
    jobs = mlflow.search_runs(experiment_names=["quickstart"], filter_string="tags.run_kind = 'job'")
    assert len(jobs) == 3 and set(jobs.status) == {"FINISHED"}
    scores = jobs["metrics.best_val_acc"].astype(float)
    assert scores.nunique() > 1, jobs[["params.lr", "metrics.best_val_acc"]]  # the trials differ: a real choice
    assert best == pytest.approx(scores.max())
    # Quickstart accuracies are coarse (a few hundred images), so trials can tie: the reported lr is one of the best
    best_lrs = jobs.loc[scores == scores.max(), "params.lr"].astype(float)
    assert any(lr == pytest.approx(best_lr) for lr in best_lrs), (best_lr, jobs[["params.lr", "metrics.best_val_acc"]])
