"""The cluster benchmarks still run: bench_launchers and stress_claims at their smallest settings.

Apart from `test_benchmarks.py` so that the two test workers share the smokes. Each script starts its own
PostgreSQL, `mlflow server` (and Ray head) on 127.0.0.1 and re-runs itself in a loopback-only network namespace.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil

import pytest
from servers import postgres_bin
from test_benchmarks import smoke

pytestmark = [
    pytest.mark.slow,
    pytest.mark.cluster,
    pytest.mark.skipif(
        importlib.util.find_spec("ray") is None or importlib.util.find_spec("psycopg2") is None,
        reason='needs the [cluster] extra: pip install -e ".[cluster]"',
    ),
    pytest.mark.skipif(postgres_bin() is None, reason="needs PostgreSQL (apt-get install -y postgresql)"),
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("unshare") is None,
        reason="a loopback-only network namespace needs root and unshare (CI runs as root)",
    ),
]


def test_the_launcher_benchmark_runs_every_launcher_and_store_at_its_smoke_setting():
    out = smoke("bench_launchers.py")
    for launcher, store in (("basic", "SQLite"), ("joblib (2 workers)", "server on PostgreSQL"),
                            ("Ray (local head)", "server on PostgreSQL")):  # fmt: skip
        assert re.search(rf"^\| {re.escape(launcher)} \| {store} \| [\d.]+ \| [\d.]+ \|$", out, re.M), out[-3000:]


def test_the_claims_stress_runs_one_round_at_its_smoke_setting():
    """Two 2-job sweeps of one study at once: both exit 0, each configuration trained once, nothing left RUNNING."""
    out = smoke("stress_claims.py")
    total = r"^\| \*\*all\*\* \| 0 non-zero \| 2 of 2 \| \d+ \| \*\*0\*\* \| \*\*0\*\* \| 0 \| \|$"
    assert re.search(total, out, re.M), out[-3000:]
