"""Benchmark: scanning a large folder for a job's identity, the first time and again unchanged (the scan index).

    python benchmarks/bench_scan.py [--images 100000] [--smoke]

Generates a two-class folder of small JPEGs (train, validation and test; 8% each for the held-out splits) under a
temporary folder, then prepares the same job (`harness.jobs.inputs.prepare`: the folder's stats, the scan, every
file's checks and digest, the job's identity) three times, each in a fresh Python process so that nothing is
reused from memory: with an empty cache folder (every file read), again (every file unchanged: taken from the
scan index), and once more with `cache=false` (no index: every file read, as before the index existed). Only the
call is timed, not the imports. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def generate(root: Path, images: int, seed: int = 0) -> None:
    """`images` training JPEGs of 32 x 32 (two classes), and 8% as many in validation and in test."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    counts = {"train": images, "validation": max(2, images * 8 // 100), "test": max(2, images * 8 // 100)}
    for split, n in counts.items():
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = base.copy()
            pixels[i % 32, (i // 32) % 32] = rng.integers(0, 256, 3)  # every file different
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
            (root / split / ("a", "b")[i % 2] / f"{i:07d}.jpg").write_bytes(buffer.getvalue())


def prepare_seconds(folder: Path, cache: Path | None) -> dict:
    """`inputs.prepare` in this process: its seconds, the job identity and how many files it read."""
    import logging

    from hydra import compose, initialize_config_dir

    from harness.jobs import inputs
    from harness.paths import conf_dir

    said: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())
    logging.getLogger("harness.data.folders").addHandler(handler)
    logging.getLogger("harness.data.folders").setLevel(logging.INFO)
    overrides = ["data=folder", f"data.path={folder}", "backbone.weights=null", "regimes=[frozen]"]
    overrides += [f"cache_dir={cache}"] if cache is not None else ["cache=false"]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    t0 = time.perf_counter()
    job = inputs.prepare(cfg)
    seconds = time.perf_counter() - t0
    reused = next((line for line in said if "unchanged since an earlier scan" in line), "no file reused")
    return {"seconds": seconds, "identity": job.identity, "files": sum(len(s) for s in job.splits.values()),
            "index": reused}  # fmt: skip


def in_own_process(folder: Path, cache: Path | None) -> dict:
    cmd = [sys.executable, __file__, "--only", str(folder), "--cache", str(cache) if cache else ""]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--smoke", action="store_true", help="200 images: checks the script in seconds")
    parser.add_argument("--only", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cache", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        print(json.dumps(prepare_seconds(args.only, Path(args.cache) if args.cache else None)))
        return
    images = 200 if args.smoke else args.images
    with tempfile.TemporaryDirectory() as tmp:
        folder, cache = Path(tmp) / "data", Path(tmp) / "cache"
        t0 = time.perf_counter()
        generate(folder, images)
        made = time.perf_counter() - t0
        time.sleep(2.2)  # the last files written are trusted by the index only once 2 s old (data.index.RACY_NS)
        rows = [
            ("first scan (empty cache folder: every file read)", in_own_process(folder, cache)),
            ("the same folder again, unchanged (scan index)", in_own_process(folder, cache)),
            ("cache=false (no index: every file read)", in_own_process(folder, None)),
        ]
    print(f"{images:,} training images generated in {made:.0f} s; `inputs.prepare` in a fresh process each, ", end="")
    print("imports not timed\n")
    print("| scan | files | seconds | job identity | index |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in rows:
        print(f"| {name} | {r['files']:,} | {r['seconds']:.1f} | {r['identity']} | {r['index']} |")
    assert len({r["identity"] for _, r in rows}) == 1, "the scan index changed a job identity"


if __name__ == "__main__":
    main()
