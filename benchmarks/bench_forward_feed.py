"""Benchmark: how the frozen stage is fed its batches, each in fresh processes, as a job's first pass runs.

    python benchmarks/bench_forward_feed.py [--processes 5] [--smoke]

Needs ../shared (the photographs and the MobileNetV2 weights). Each process decodes the 4,000 shared photographs
(tf.data, as a job does), builds MobileNetV2 at 160 px with its weights, then times two passes of the graph call
over them, fed by:

- `tf.data`: `Dataset.from_generator(slices).prefetch(2)`, how `harness.training.forward` fed it until 2026-12-07;
- `read-ahead thread`: the loop `forward.forward` runs now (each next batch copied out by a thread).

Processes alternate between the two feeds. `--smoke`: 96 generated images at 32 px with random weights, one
process each (checks the script; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench_frozen_stage import FULL, Setting, photographs, smoke  # the same photographs, weights and smoke images
from measure import in_own_process

FEEDS = ("tf.data", "read-ahead thread")
SLOW = 1.5  # a pass this many times the median of all passes of its size counts as slow


def child(feed: str, given: str) -> None:
    """One process: decode, build, two timed passes through `feed`; prints one JSON line of seconds."""
    import tensorflow as tf

    from harness.training import backbones, forward, models

    spec = json.loads(given)
    s = Setting(Path(spec["folder"]), spec["weights"], spec["size"], ())
    x = photographs(s)
    stage = models.frozen_stage("mobilenetv2", s.size, backbones.build("mobilenetv2", s.weights, s.size), pool=True)
    call = forward.graph_call(stage, x.dtype)

    def through_tf_data() -> None:
        def slices():
            for start in range(0, len(x), forward.FORWARD_BATCH):
                yield x[start : start + forward.FORWARD_BATCH]

        signature = tf.TensorSpec((None, *x.shape[1:]), tf.uint8)
        for batch in tf.data.Dataset.from_generator(slices, output_signature=signature).prefetch(2):
            call(batch).numpy()

    run = through_tf_data if feed == FEEDS[0] else lambda: forward.forward(stage, x)
    seconds = []
    for _ in range(2):
        t0 = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - t0)
    print(json.dumps({"seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=5, help="fresh processes per feed")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--only", choices=FEEDS, help=argparse.SUPPRESS)  # one process's feed
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        child(args.only, args.spec)
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:
            args.processes = 1
        s = smoke(Path(tmp)) if args.smoke else FULL
        spec = json.dumps({"folder": str(s.folder), "weights": s.weights, "size": s.size})
        passes: dict[str, list[list[float]]] = {feed: [] for feed in FEEDS}
        for _ in range(args.processes):
            for feed in FEEDS:
                passes[feed].append(in_own_process(__file__, feed, "--spec", spec)["seconds"])
    median = statistics.median(s for runs in passes.values() for pair in runs for s in pair)
    print(f"### The frozen stage's first two passes in fresh processes, by feed ({args.processes} processes each)\n")
    print("| feed | first pass, each process (s) | second pass (s) | median first pass | slow passes |")
    print("| --- | --- | --- | --- | --- |")
    for feed, runs in passes.items():
        firsts, seconds = [r[0] for r in runs], [r[1] for r in runs]
        slow = sum(s > SLOW * median for s in firsts + seconds)
        print(f"| {feed} | {' / '.join(f'{s:.1f}' for s in firsts)} | {' / '.join(f'{s:.1f}' for s in seconds)} "
              f"| {statistics.median(firsts):.1f} | {slow} of {2 * len(runs)} |")  # fmt: skip
    print(f"\nSlow: over {SLOW}x the median of all {sum(2 * len(r) for r in passes.values())} passes ({median:.1f} s).")


if __name__ == "__main__":
    main()
