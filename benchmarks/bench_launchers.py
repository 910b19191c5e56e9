"""Benchmark: the same 4-job sweep through each launcher and store, side by side in one run.

Launchers: basic (jobs one after another in the launching process), joblib (2 worker processes), Ray (a
local head, one fresh worker process per job); stores: SQLite, and `mlflow server` on PostgreSQL. The job
is the cheapest real one (frozen random-init MobileNetV2 at 32 px, one epoch, 12 generated images), so the
wall time is the path's overhead: imports, process start-up, store round trips, Ray scheduling.

Needs the [cluster] extra, PostgreSQL's binaries and root: it re-runs itself inside a network namespace
with loopback only (`unshare -n`), where the servers listen on 127.0.0.1.

    python benchmarks/bench_launchers.py [--jobs 4] [--repeats 1]
    python benchmarks/bench_launchers.py --smoke   # one job per launcher, each store once (CI: it still runs)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the real servers the cluster tests use

from servers import mlflow_server, only_loopback, postgresql, ray_head  # noqa: E402

from harness import data  # noqa: E402


def sweep(launcher: list[str], store: str, photos: Path, jobs: int, cwd: Path) -> float:
    args = [
        sys.executable, "-m", "harness", "-m", *launcher, f"seed={','.join(map(str, range(jobs)))}",
        "data=folder", f"data.path={photos}", "backbone=mobilenetv2", "backbone.weights=null",
        "backbone.image_size=32", "regimes=[frozen]", "epochs.head=1", f"tracking_uri={store}",
        f"cache_dir={cwd / 'cache'}", f"study=bench{time.monotonic_ns()}",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    t0 = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or f"sweep summary: {jobs} finished" not in proc.stdout + proc.stderr:
        raise RuntimeError((proc.stdout + proc.stderr)[-4000:])
    return wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="one job through each launcher, each store once")
    args = parser.parse_args()
    if args.smoke:
        args.jobs, args.repeats = 1, 1
    if not only_loopback():
        inner = f"ip link set lo up && exec {sys.executable} {Path(__file__).resolve()} " + " ".join(sys.argv[1:])
        sys.exit(subprocess.call(["unshare", "-n", "sh", "-c", inner]))

    work = Path(tempfile.mkdtemp(prefix="bench-launchers-"))
    photos = data.ensure_synthetic(work / "gen", {"train": 6, "validation": 3, "test": 3})
    rows = []
    with postgresql() as backend, mlflow_server(backend, work / "artifacts") as server, ray_head() as head:
        stores = {"SQLite": f"sqlite:///{work / 'mlflow.db'}", "server on PostgreSQL": server.url}
        launchers = {
            "basic": [],
            "joblib (2 workers)": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
            "Ray (local head)": ["hydra/launcher=ray", f"hydra.launcher.ray.init.address={head}"],
        }
        if not args.smoke:  # creates the SQLite tables, warms caches
            sweep(["hydra/launcher=basic"], stores["SQLite"], photos, 1, work)
        pairs = [(launcher, store_name) for launcher in launchers for store_name in stores]
        if args.smoke:  # every launcher and every store once: basic on SQLite, the others on the server
            pairs = [(launcher, "SQLite" if launcher == "basic" else "server on PostgreSQL") for launcher in launchers]
        for launcher, store_name in pairs:
            extra, store = launchers[launcher], stores[store_name]
            walls = [sweep(extra, store, photos, args.jobs, work) for _ in range(args.repeats)]
            wall = statistics.median(walls)
            rows.append((launcher, store_name, wall, wall / args.jobs))
            print(f"{launcher:20s} {store_name:22s} {wall:7.1f} s", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    print(f"\n| launcher | store | wall s ({args.jobs} jobs, median of {args.repeats}) | s per job |")
    print("| --- | --- | --- | --- |")
    for launcher, store_name, wall, per_job in rows:
        print(f"| {launcher} | {store_name} | {wall:.1f} | {per_job:.1f} |")


if __name__ == "__main__":
    main()
