"""Benchmarks still run: each script's smallest setting, so that none breaks silently between measurements."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def smoke(script: str, *args: str, timeout: int = 600) -> str:
    """A benchmark's smoke setting run to its end: its printed output."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--smoke", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_the_calibration_benchmark_runs_at_its_smoke_setting():
    out = smoke("calibration.py", timeout=300)
    assert re.search(r"^\| difference +\|", out, re.M) and re.search(r"^\| single +\|", out, re.M)
    assert "settings within 3-7% rejected and 92-98% covered" in out


def test_the_scan_benchmark_runs_at_its_smoke_setting():
    out = smoke("bench_scan.py", timeout=300)
    assert "| the same folder again, unchanged (scan index) | 232 |" in out
    assert "232 file(s) unchanged since an earlier scan, 0 read" in out


def test_the_transferability_benchmark_runs_at_its_smoke_setting():
    out = smoke("bench_transferability.py", timeout=120)
    assert re.search(r"^\| 500 \| 64 \| [\d.]+ \| [\d.]+ \| -?[\d.]+ \| [\d.]+ \| [\d.]+ \|$", out, re.M), out


@pytest.mark.slow
def test_the_scale_benchmark_runs_at_its_smoke_setting():
    """One small job, measured: a row with its peak anonymous memory, disk written and rates."""
    out = smoke("bench_scale.py", timeout=600)
    row = re.search(
        r"^\| 200 \| ([\d.]+) \| ([\d.]+) \| (\d+) \| \d+ \| (\d+) \| (\d+) \| (\d+) \| ([\d.]+) \|$",
        out,
        re.M,
    )
    assert row, out[-2000:]
    anon, rss, disk = (float(row.group(i)) for i in (1, 2, 3))
    assert 0 < anon <= rss and disk > 0 and all(int(row.group(i)) > 0 for i in (4, 5, 6))


@pytest.mark.slow
def test_the_frozen_stage_benchmark_runs_at_its_smoke_setting():
    out = smoke("bench_frozen_stage.py")
    assert re.search(r"^\| harness frozen stage \(batch 64\) \| \d+ \| [\d.]+x \| \d+% \|", out, re.M), out[-2000:]
    round_row = r"^\| 1 \| (?:[\d.]+ \| ){8}[\d.]+ \([\d.]+x\) \| [\d.]+ \([\d.]+x\) \| [\d.]+ \([\d.]+x\) \|$"
    assert re.search(round_row, out, re.M), out[-3000:]  # floor, the least work's parts, the two CLI runs
    assert re.search(r"^Median ratio to the floor over 1 rounds: the least any run needs [\d.]+x", out, re.M), out


@pytest.mark.slow
def test_the_sweep_benchmark_runs_every_part_at_its_smoke_setting():
    out = smoke("bench_sweep.py")
    for row in ("harness (cold cache)", "sweep, 2 boundaries", "harness frozen stage", "overhead per job", "bf16"):
        assert row in out, out[-3000:]


@pytest.mark.slow
def test_the_augmentation_benchmark_runs_each_pipeline_at_its_smoke_setting():
    out = smoke("bench_augment.py")
    assert len(re.findall(r"^\| (Chollet's pipeline|harness|bare|floor)[^|]* \| [\d.]+ \| [\d.]+ \| [\d.]+x \|$", out,
                          re.M)) == 4, out[-2000:]  # fmt: skip


@pytest.mark.slow
def test_the_streaming_benchmark_runs_at_its_smoke_setting_with_equal_accuracies():
    out = smoke("bench_streaming.py")
    rows = re.findall(r"^\| (frozen|fine-tuning)[^|]* \| (baseline|streaming) \|.*\| ([^|]+) \|$", out, re.M)
    assert len(rows) == 2, out[-2000:]
    assert rows[0][2] == rows[1][2]  # the same checkout twice: the same accuracies


@pytest.mark.slow
def test_the_head_convergence_benchmark_runs_at_its_smoke_setting(tmp_path):
    out = smoke("head_convergence.py", "--out", str(tmp_path / "h.png"))
    assert len(re.findall(r"^\| \d+ \| (defaults|converged|old defaults) \| [\d.]+ \|", out, re.M)) == 6, out
    assert (tmp_path / "h.png").stat().st_size > 0


@pytest.mark.slow
def test_the_forward_feed_benchmark_runs_both_feeds_at_its_smoke_setting():
    out = smoke("bench_forward_feed.py")
    rows = re.findall(r"^\| (tf\.data|read-ahead thread) \| [\d.]+ \| [\d.]+ \| [\d.]+ \| \d of 2 \|$", out, re.M)
    assert rows == ["tf.data", "read-ahead thread"], out[-2000:]
