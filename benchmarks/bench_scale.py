"""Benchmark: one frozen + fine-tuning job at growing numbers of training images, memory against dataset size.

    python benchmarks/bench_scale.py [--sizes 5000,25000,100000] [--regimes frozen,finetune] [--smoke]

Generates two-class folders of 256 x 256 JPEGs itself (1,000 validation and 1,000 test images; the smaller
training sets are hard links to the first files of the largest), then runs, per size, with a cold cache and a
fresh store: MobileNetV2 with the shared ImageNet weights at 160 px, fine-tuned from `block_3_expand` (whose cut
holds 154 KB of float32 per image), head 2 epochs, fine-tuning 1 epoch (a step budget rounds up to whole epochs,
so one epoch is the least), early stopping off. `--regimes frozen` runs the frozen stage and the head only.
Prints a Markdown table per size: peak anonymous resident memory of the job's processes (the budget; `measure.py`)
and peak total resident memory beside it, disk written to the cache, wall time, decode and frozen-stage images/s
(from the job's log), and a bare batched forward pass over the same decoded images (`tf.function` over
`model(batch)`, batches of 64 read from the cached images) in the same run, with the frozen stage's share of it.
`--smoke`: 200 images, random weights at 32 px, to check the script in seconds.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from measure import run_measured
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = (
    ROOT / ".." / "shared" / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
).resolve()
HELD_OUT = 1000


def jpeg(rng: np.random.Generator, label: int) -> bytes:
    """A 256 x 256 JPEG: smooth noise, tinted by its class (red or blue), so the classes can be learned."""
    coarse = rng.integers(0, 200, (16, 16, 3), dtype=np.uint8)
    coarse[..., 0 if label == 0 else 2] += 55
    pixels = np.asarray(Image.fromarray(coarse).resize((256, 256), Image.BILINEAR))
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def generate(root: Path, train: int, held_out: int, seed: int = 0) -> Path:
    """The largest folder: `train` training images and `held_out` each in validation and test (half per class)."""
    folder = root / f"train{train}"
    if (folder / ".complete").is_file():
        return folder
    rng = np.random.default_rng(seed)
    for split, n in {"train": train, "validation": held_out, "test": held_out}.items():
        for name in ("a", "b"):
            (folder / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (folder / split / ("a", "b")[i % 2] / f"{i:07d}.jpg").write_bytes(jpeg(rng, i % 2))
    (folder / ".complete").write_text("")
    return folder


def subset(largest: Path, train: int) -> Path:
    """A folder with the first `train` training images of `largest` and all its held-out images, as hard links."""
    folder = largest.parent / f"train{train}"
    if (folder / ".complete").is_file() or folder == largest:
        return folder
    for path in sorted(largest.rglob("*.jpg")):
        rel = path.relative_to(largest)
        if rel.parts[0] == "train" and int(path.stem) >= train:
            continue
        (folder / rel.parent).mkdir(parents=True, exist_ok=True)
        os.link(path, folder / rel)
    (folder / ".complete").write_text("")
    return folder


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def bare_forward(cache: Path, weights: str | None, size: int) -> tuple[int, float]:
    """(images, seconds) of a bare batched forward pass (trunk + pooling, `tf.function`, batches of 64 read from the
    cached decoded images) over every image the job decoded."""
    import tensorflow as tf

    from harness.training import backbones, models

    stage = models.frozen_stage("mobilenetv2", size, backbones.build("mobilenetv2", weights, size), pool=True)
    call = tf.function(lambda b: stage(tf.cast(b, tf.float32), training=False))
    call(np.zeros((1, size, size, 3), np.uint8))  # traced before the clock starts
    arrays = [np.load(p, mmap_mode="r") for p in sorted((cache / "images").glob("images-*.npy"))]
    n, t0 = 0, time.perf_counter()
    for x in arrays:
        for start in range(0, len(x), 64):
            call(np.asarray(x[start : start + 64])).numpy()
        n += len(x)
    return n, time.perf_counter() - t0


def rates(log: str) -> tuple[float, float]:
    """(decode images/s, frozen-stage images/s) from a job's log: the images decoded over their seconds, and the
    images through the whole frozen stage (pixels to the pooled output, over every segment) over their seconds."""
    decoded = re.search(r"data: \{([^}]*)\} images at \d+ px ready in ([\d.]+)s", log)
    n = sum(int(v) for v in re.findall(r": (\d+)", decoded.group(1))) if decoded else 0
    decode = n / float(decoded.group(2)) if decoded else float("nan")
    segments = re.findall(r"features@\S+: \S+ from .*? \((\d+) images in ([\d.]+)s", log)
    seconds = sum(float(s) for _, s in segments)
    return decode, (n / seconds if seconds else float("nan"))


def run(folder: Path, work: Path, args: argparse.Namespace) -> dict[str, float | int]:
    cache, store = work / "cache", f"sqlite:///{work}/mlflow.db"
    size = 32 if args.smoke else 160
    weights = None if args.smoke else str(WEIGHTS)
    cmd = [
        sys.executable, "-m", "harness", "data=folder", f"data.path={folder}", "backbone=mobilenetv2",
        f"backbone.weights={weights if weights else 'null'}", f"backbone.image_size={size}", "head=gap",
        f"regimes=[{args.regimes}]", "unfreeze_at=block_3_expand", "epochs.head=2", "epochs.finetune=1",
        "early_stopping.enabled=false", "optimizer=rmsprop", "head_lr=1e-4", "lr=1e-5", "batch_size=32",
        f"cache_dir={cache}", f"tracking_uri={store}", "study=bench_scale",
    ]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TMPDIR": str(work)}
    measured = run_measured(cmd, work, env)
    if measured.returncode != 0:
        raise SystemExit(f"the job on {folder} failed:\n{measured.output[-4000:]}")
    decode, frozen = rates(measured.output)
    n, seconds = bare_forward(cache, weights, size)
    return {
        "train": int(folder.name.removeprefix("train")),
        "anon": measured.peak_anon,
        "rss": measured.peak_rss,
        "disk": folder_bytes(cache),
        "wall": measured.wall_s,
        "decode": decode,
        "frozen": frozen,
        "bare": n / seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000,25000,100000", help="training images per job, comma-separated")
    parser.add_argument("--regimes", default="frozen,finetune", help="frozen,finetune or frozen")
    parser.add_argument("--data", type=Path, help="where to generate the folders (kept); default a temporary folder")
    parser.add_argument("--smoke", action="store_true", help="200 training images, random weights at 32 px")
    args = parser.parse_args()
    sizes = [200] if args.smoke else sorted(int(s) for s in args.sizes.split(","))
    held_out = 20 if args.smoke else HELD_OUT
    if not args.smoke and not WEIGHTS.is_file():
        raise SystemExit(f"needs the shared MobileNetV2 weights at {WEIGHTS}")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or Path(tmp) / "data"
        t0 = time.perf_counter()
        largest = generate(root, sizes[-1], held_out)
        print(f"generated {sizes[-1]} + 2 x {held_out} JPEGs in {time.perf_counter() - t0:.0f} s", flush=True)
        rows = []
        for n in sizes:
            work = Path(tmp) / f"job{n}"
            work.mkdir()
            rows.append(run(subset(largest, n), work, args))
            print(rows[-1], flush=True)
    print(f"\nregimes [{args.regimes}], MobileNetV2 at {32 if args.smoke else 160} px from block_3_expand\n")
    print("| training images | peak RssAnon GB | peak RSS GB | cache written MB | wall s | decode img/s "
          "| frozen stage img/s | bare forward img/s | frozen / bare |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        cells = [f"{r['train']:,}", *(f"{r[k] / 1e9:.2f}" for k in ("anon", "rss"))]
        cells += [f"{r['disk'] / 1e6:.0f}", f"{r['wall']:.0f}"]
        cells += [*(f"{r[k]:.0f}" for k in ("decode", "frozen", "bare")), f"{r['frozen'] / r['bare']:.2f}"]
        print(f"| {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
