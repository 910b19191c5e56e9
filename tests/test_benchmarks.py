"""Benchmarks still run: each script's smallest setting, so that none breaks silently between measurements."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_calibration_benchmark_runs_at_its_smoke_setting():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "calibration.py"), "--smoke"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"^\| difference +\|", proc.stdout, re.M) and re.search(r"^\| single +\|", proc.stdout, re.M)
    assert "settings within 3-7% rejected and 92-98% covered" in proc.stdout


def test_the_scan_benchmark_runs_at_its_smoke_setting():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_scan.py"), "--smoke"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| the same folder again, unchanged (scan index) | 232 |" in proc.stdout
    assert "232 file(s) unchanged since an earlier scan, 0 read" in proc.stdout


def test_the_scale_benchmark_runs_at_its_smoke_setting():
    """One small job, measured: a row with its peak anonymous memory, disk written and rates."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_scale.py"), "--smoke"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    row = re.search(
        r"^\| 200 \| ([\d.]+) \| ([\d.]+) \| (\d+) \| \d+ \| (\d+) \| (\d+) \| (\d+) \| ([\d.]+) \|$",
        proc.stdout,
        re.M,
    )
    assert row, proc.stdout[-2000:]
    anon, rss, disk = (float(row.group(i)) for i in (1, 2, 3))
    assert 0 < anon <= rss and disk > 0 and all(int(row.group(i)) > 0 for i in (4, 5, 6))
