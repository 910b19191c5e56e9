"""Stress: rounds of two sweeps of one study started together through `mlflow server` on PostgreSQL.

Each round is a new study; both sweeps get the same configurations (`--jobs` seeds of the cheapest real job:
frozen random-init MobileNetV2 at 32 px on 12 generated images) and start at the same moment. After the round,
the store is read back: every configuration must have exactly one valid FINISHED job run (no duplicate: two
FINISHED runs of one identity; nothing lost: a configuration with none), nothing may be left RUNNING, and
both sweeps must exit 0. "met the other's claim" counts the jobs that found their configuration held by the
other sweep's live claim (and waited for it): how often the protocol was put to the test. Counts per round
and in total are printed as a Markdown table.

Both sweeps run with wait_for_others=true, so a configuration that one finds held by the other is waited for
and counted done (without it that sweep would exit 1, by design, with "running elsewhere").

Needs the [cluster] extra, PostgreSQL's binaries and root: it re-runs itself inside a network namespace with
loopback only (`unshare -n`), where the servers listen on 127.0.0.1. Not part of the test suite (minutes).

    python benchmarks/stress_claims.py [--rounds 20] [--jobs 4]
    python benchmarks/stress_claims.py --smoke   # one round of two 2-job sweeps, one epoch (CI: it still runs)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the real servers the cluster tests use

from servers import mlflow_server, only_loopback, postgresql  # noqa: E402

from harness import data  # noqa: E402


def start_sweep(store: str, study: str, photos: Path, jobs: int, epochs: int, cwd: Path) -> subprocess.Popen:
    args = [
        sys.executable, "-m", "harness", "-m", f"seed={','.join(map(str, range(jobs)))}",
        "data=folder", f"data.path={photos}", "backbone=mobilenetv2", "backbone.weights=null",
        "backbone.image_size=32", "regimes=[frozen]", f"epochs.head={epochs}", f"tracking_uri={store}",
        f"cache_dir={cwd / 'cache'}", f"study={study}", "wait_for_others=true",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def check_round(store: str, study: str, jobs: int) -> dict[str, int]:
    """Duplicates, lost configurations and runs left RUNNING, read back from the store."""
    import mlflow

    from harness.jobs import leases

    mlflow.set_tracking_uri(store)
    experiment = mlflow.get_experiment_by_name(study).experiment_id
    runs = mlflow.MlflowClient().search_runs([experiment], "tags.run_kind = 'job'", max_results=10_000)
    valid = Counter(r.data.tags["seed"] for r in runs if leases.valid_finished(r))
    return {
        "duplicates": sum(n - 1 for n in valid.values() if n > 1),
        "lost": sum(1 for seed in range(jobs) if valid[str(seed)] == 0),
        "left_running": sum(r.info.status == "RUNNING" for r in runs),
        "withdrawn_or_killed": sum(r.info.status == "KILLED" for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="one round of two 2-job sweeps, one epoch each")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.jobs, args.epochs = 1, 2, 1
    if not only_loopback():
        inner = f"ip link set lo up && exec {sys.executable} {Path(__file__).resolve()} " + " ".join(sys.argv[1:])
        sys.exit(subprocess.call(["unshare", "-n", "sh", "-c", inner]))

    work = Path(tempfile.mkdtemp(prefix="stress-claims-"))
    photos = data.ensure_synthetic(work / "gen", {"train": 6, "validation": 3, "test": 3})
    rows, totals = [], Counter()
    started = time.perf_counter()
    with postgresql() as backend, mlflow_server(backend, work / "artifacts") as server:
        for r in range(args.rounds):
            study = f"stress-{r}"
            t0 = time.perf_counter()
            sweeps = [start_sweep(server.url, study, photos, args.jobs, args.epochs, work) for _ in range(2)]
            logs = [p.communicate(timeout=1800)[0] for p in sweeps]
            codes = [p.returncode for p in sweeps]
            trained = sum(log.count("frozen   done:") for log in logs)
            held = sum(log.count("wait: job") for log in logs)  # a claim that met the other sweep's live claim
            counts = check_round(server.url, study, args.jobs)
            row = {"round": r, "exit codes": codes, "trained": trained, "held": held, **counts,
                   "s": time.perf_counter() - t0}  # fmt: skip
            rows.append(row)
            totals.update(counts | {"trained": trained, "held": held, "nonzero_exits": sum(codes)})
            print(row, flush=True)
            if codes != [0, 0]:
                print("\n".join(log[-3000:] for log in logs), flush=True)
    shutil.rmtree(work, ignore_errors=True)
    minutes = (time.perf_counter() - started) / 60
    print(f"\n{args.rounds} rounds of two {args.jobs}-job sweeps at once, server on PostgreSQL, {minutes:.1f} min\n")
    print("| round | exit codes | trained | met the other's claim | duplicates | lost | left RUNNING | s |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['round']} | {row['exit codes']} | {row['trained']} | {row['held']} | {row['duplicates']} | "
              f"{row['lost']} | {row['left_running']} | {row['s']:.0f} |")  # fmt: skip
    all_jobs = args.rounds * args.jobs
    print(f"| **all** | {totals['nonzero_exits']} non-zero | {totals['trained']} of {all_jobs} | {totals['held']} | "
          f"**{totals['duplicates']}** | **{totals['lost']}** | {totals['left_running']} | |")  # fmt: skip


if __name__ == "__main__":
    main()
