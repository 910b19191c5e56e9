"""Benchmark: memory-mapped streaming against an earlier checkout's in-memory arrays, on the shared photographs.

    python benchmarks/bench_streaming.py --baseline /path/to/other/checkout [--repeats 3]
    python benchmarks/bench_streaming.py --smoke   # this checkout against itself, generated images: seconds

`--baseline` is a checkout of the commit to compare with (e.g. `git worktree add ../baseline 73af352`, the last
commit that held every split in memory); it runs with this virtual environment, its own `src` first on the path
(and a link `src/harness/conf` -> `conf` made in it, so it reads its own configs).
Two jobs through the CLI, each with a cold cache and a fresh store, repetitions interleaved (baseline, this
checkout, baseline, ...): a 30-epoch frozen run (MobileNetV2 at 160 px, the shared ImageNet weights, early
stopping off) and a fine-tuning job (frozen head 10 epochs, then 5 epochs fine-tuned from block_11_expand).
Prints Markdown: wall medians and their ratio, peak anonymous and total resident memory (`measure.py`), and each
run's test accuracies, which must be equal (same config, same seed). `--smoke`: one round of the fine-tuning
job (one epoch each phase, its frozen stage included) on generated images with random weights at 32 px, this
checkout against itself; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from measure import Measured, run_measured

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared").resolve()
WEIGHTS = SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
COMMON = [
    "data=cats_and_dogs_small",
    "backbone=mobilenetv2",
    f"backbone.weights={WEIGHTS}",
    "backbone.image_size=160",
    "head=gap",
    "optimizer=rmsprop",
    "head_lr=1e-4",
    "lr=1e-5",
    "batch_size=32",
    "early_stopping.enabled=false",
    "seed=0",
]
JOBS = {
    "frozen, 30 epochs": ["regimes=[frozen]", "epochs.head=30"],
    "fine-tuning job (10 + 5 epochs, block_11_expand)": [
        "regimes=[frozen,finetune]",
        "unfreeze_at=block_11_expand",
        "epochs.head=10",
        "epochs.finetune=5",
    ],
}


def importable(checkout: Path) -> None:
    """Make `checkout`'s own config tree importable as `harness.conf` from its `src` (a link to its conf/, as an
    install ships it), so that this environment's editable install does not hand it this checkout's configs."""
    link = checkout / "src" / "harness" / "conf"
    if not link.exists():
        link.symlink_to(checkout / "conf", target_is_directory=True)


SMOKE_COMMON = [
    "backbone=mobilenetv2", "backbone.weights=null", "backbone.image_size=32", "head=gap", "batch_size=32",
    "early_stopping.enabled=false", "seed=0",
]  # fmt: skip
SMOKE_JOBS = {  # the fine-tuning job runs the frozen stage too: one job checks both paths
    "fine-tuning job (1 + 1 epochs, block_11_expand)": [
        "regimes=[frozen,finetune]", "unfreeze_at=block_11_expand", "epochs.head=1", "epochs.finetune=1",
    ],
}  # fmt: skip


def run_job(checkout: Path, overrides: list[str]) -> tuple[Measured, dict[str, float]]:
    """One job of `checkout`'s harness, cold cache, fresh store: what was measured, and test accuracy by regime."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(checkout / "src"), "TF_CPP_MIN_LOG_LEVEL": "2"}
        store = f"sqlite:///{tmp}/mlflow.db"
        cmd = [sys.executable, "-m", "harness", *overrides, f"cache_dir={tmp}/cache", f"tracking_uri={store}"]
        cmd.append("study=bench_streaming")
        measured = run_measured(cmd, Path(tmp), env)
        if measured.returncode != 0:
            raise SystemExit(f"{checkout}: {' '.join(overrides)} failed:\n{measured.output[-3000:]}")
        mlflow.set_tracking_uri(store)
        runs = mlflow.search_runs(experiment_names=["bench_streaming"], filter_string="tags.run_kind = 'regime'")
        return measured, dict(zip(runs["tags.regime"], runs["metrics.test_acc"].astype(float), strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="a checkout of the commit to compare with")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="generated images, this checkout against itself")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:
            from harness import data

            photos = data.ensure_synthetic(Path(tmp), {"train": 16, "validation": 8, "test": 8})
            common, jobs, baseline = [*SMOKE_COMMON, "data=folder", f"data.path={photos}"], SMOKE_JOBS, ROOT
            args.repeats = 1
        elif args.baseline is None or not WEIGHTS.is_file():
            raise SystemExit(f"needs --baseline and the shared MobileNetV2 weights at {WEIGHTS}")
        else:
            common, jobs, baseline = COMMON, JOBS, args.baseline.resolve()
        compare(baseline, common, jobs, args.repeats)


def compare(baseline: Path, common: list[str], jobs: dict[str, list[str]], repeats: int) -> None:
    """Run each job `repeats` times in each checkout, interleaved, and print the table."""
    checkouts = {"baseline": baseline, "streaming": ROOT}
    if baseline != ROOT:
        importable(baseline)
    results: dict[tuple[str, str], list[tuple[Measured, dict[str, float]]]] = {}
    for repeat in range(repeats):
        for job, overrides in jobs.items():
            for variant, checkout in checkouts.items():
                got = run_job(checkout, [*common, *overrides])
                results.setdefault((job, variant), []).append(got)
                print(f"round {repeat + 1}: {job} / {variant}: {got[0].wall_s:.1f} s, test {got[1]}", flush=True)
    print("\n| job | checkout | wall s (runs) | median | ratio | peak RssAnon GB | peak RSS GB | test accuracy |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for job in jobs:
        base = statistics.median(m.wall_s for m, _ in results[(job, "baseline")])
        for variant in checkouts:
            runs = results[(job, variant)]
            walls = [m.wall_s for m, _ in runs]
            median = statistics.median(walls)
            anon = statistics.median(m.peak_anon for m, _ in runs) / 1e9
            rss = statistics.median(m.peak_rss for m, _ in runs) / 1e9
            accs = sorted({f"{r}: {a:.4f}" for _, accs in runs for r, a in accs.items()})
            print(
                f"| {job} | {variant} | {', '.join(f'{w:.1f}' for w in walls)} | {median:.1f} | {median / base:.3f} "
                f"| {anon:.2f} | {rss:.2f} | {'; '.join(accs)} |"
            )
    print(f"\nbaseline: {checkouts['baseline']}; CPU: {cpu_model()}")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
