"""Benchmark: the cost of the transferability estimates (LogME, k-NN leave-one-out accuracy), seconds per 1,000 images.

Features are generated (two classes, a class signal on one channel) at the width of MobileNetV2's pooled top (1,280
channels); each size is scored `--repeats` times and the median is printed. Peak resident memory is printed too (the
generated features included): LogME reads the features a block of rows at a time, and k-NN scores at most 10,000.

    python benchmarks/bench_transferability.py [--sizes 2000,10000,50000] [--channels 1280] [--repeats 3]
    python benchmarks/bench_transferability.py --smoke   # 500 images of 64 channels, once
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np

from harness.training import transferability


def seconds(fn, repeats: int, *args) -> float:
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args)
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,10000,50000")
    parser.add_argument("--channels", type=int, default=1280)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="500 images of 64 channels, once")
    args = parser.parse_args()
    sizes = [500] if args.smoke else [int(s) for s in args.sizes.split(",")]
    channels, repeats = (64, 1) if args.smoke else (args.channels, args.repeats)
    print("| images | channels | LogME s per 1,000 | k-NN s per 1,000 | LogME | k-NN LOO acc | peak RSS GB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    rng = np.random.default_rng(0)
    for n in sizes:
        labels = rng.integers(0, 2, n)
        features = rng.normal(size=(n, channels)).astype(np.float32)
        features[:, 0] += labels  # a class signal on one channel
        logme = seconds(transferability.logme, repeats, features, labels)
        knn = seconds(transferability.knn_accuracy, repeats, features, labels)
        scores = transferability.estimates(features, labels)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
        print(f"| {n:,} | {channels} | {1000 * logme / n:.3f} | {1000 * knn / n:.3f} | {scores['logme']:.4f} | "
              f"{scores['knn_loo_acc']:.4f} | {peak:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
