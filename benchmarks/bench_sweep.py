"""Benchmark: the Chollet's pipeline against the harness, measured side by side in one run.

    python benchmarks/bench_sweep.py [--seeds-epochs 30] [--out benchmarks/latest.md]
    python benchmarks/bench_sweep.py --only-speedup [--seeds-epochs 10]   # measurement 1 alone
    python benchmarks/bench_sweep.py --smoke   # every part on 64 generated images, random weights, 32 px: seconds

Each in-process measurement runs in a Python process of its own (`--only PART`, which prints JSON): in one
process a pipeline measured first slows the ones after it (bench_augment: harness 51 s/epoch after Chollet's
pipeline, 39 s alone), which would bias every ratio here.

Needs ../shared (real photographs and MobileNetV2 weights); prints a Markdown table. MobileNetV2 at 160 px
on cats_and_dogs_small (2,000 train / 1,000 validation / 1,000 test). Measures:

1. frozen regime, 30 epochs, no augmentation: the Chollet's pipeline (ImageDataGenerator-style loader:
   per-image PIL decode + resize + Python preprocessing, then one `fit` over the whole frozen network
   every epoch) against the harness (decode once, frozen stage once, head trained on its output), both
   from a cold start (empty cache), with test accuracy;
2. a sweep over 3 `unfreeze_at` boundaries against 1 boundary, through the real CLI (Hydra + MLflow);
3. feature-extraction throughput of the harness's frozen stage against a bare batched forward pass;
4. harness overhead per job (Hydra + MLflow + start-up, excluding data and training).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from measure import in_own_process  # noqa: E402
from PIL import Image  # noqa: E402

from harness import data  # noqa: E402
from harness.jobs import cache, features, inputs  # noqa: E402
from harness.paths import conf_dir  # noqa: E402
from harness.training import backbones, models  # noqa: E402
from harness.training.forward import FORWARD_BATCH  # noqa: E402
from harness.training.regime import Context, Recipe  # noqa: E402
from harness.training.regimes import frozen  # noqa: E402
from harness.training.trainer import Arrays, Trainer, compute_features  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared").resolve()
# `--smoke` (this script's or bench_augment's): the same code on generated images with random weights at 32 px,
# in this process and, through the environment, in every process it starts; its numbers mean nothing
SMOKE = "--smoke" in sys.argv or os.environ.get("HARNESS_BENCH_SMOKE") == "1"
if SMOKE:
    os.environ["HARNESS_BENCH_SMOKE"] = "1"
    DATA = data.ensure_synthetic(Path(tempfile.gettempdir()) / "harness-bench-smoke", {"train": 16, "validation": 8,
                                                                                       "test": 8})  # fmt: skip
    DATA_OVERRIDES = ["data=folder", f"data.path={DATA}"]
    WEIGHTS: str | None = None
    SIZE = 32
else:
    DATA = SHARED / "data" / "cats_and_dogs_small"
    DATA_OVERRIDES = ["data=cats_and_dogs_small"]  # the shared photographs (the default data is a download)
    WEIGHTS = str(SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5")
    SIZE = 160
WEIGHTS_OVERRIDE = f"backbone.weights={WEIGHTS or 'null'}"
HEAD_LR = 1e-3


def config(*overrides: str):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(
            config_name="config",
            overrides=[
                *DATA_OVERRIDES,
                "backbone=mobilenetv2",
                WEIGHTS_OVERRIDE,
                f"backbone.image_size={SIZE}",
                f"head_lr={HEAD_LR}",
                "regimes=[frozen]",
                *overrides,
            ],
        )


# --- 1. the Chollet's pipeline -------------------------------------------------------------------------


class SeedsLoader(keras.utils.PyDataset):
    """flow_from_directory + preprocessing_function, as Chollet's notebook uses it: all work per image, in Python."""

    def __init__(self, split: data.Split, batch_size: int, shuffle: bool, seed: int = 0):
        super().__init__()
        self.split, self.batch_size, self.shuffle = split, batch_size, shuffle
        self.order = np.arange(len(split))
        self.rng = np.random.default_rng(seed)
        self.preprocess = backbones.preprocess_fn("mobilenetv2")
        self.on_epoch_end()

    def __len__(self) -> int:
        return math.ceil(len(self.split) / self.batch_size)

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self.rng.shuffle(self.order)

    def transform(self, array: np.ndarray) -> np.ndarray:
        """The per-image random transform before preprocessing: none here (see bench_augment.py)."""
        return array

    def __getitem__(self, i: int):
        idx = self.order[i * self.batch_size : (i + 1) * self.batch_size]
        images = []
        for k in idx:
            with Image.open(self.split.files[k]) as img:
                array = np.asarray(img.convert("RGB").resize((SIZE, SIZE), Image.NEAREST), dtype=np.float32)
            images.append(self.preprocess(self.transform(array)))  # ImageDataGenerator's order, image by image
        return np.stack(images), self.split.labels[idx].astype("float32").reshape(-1, 1)


def seeds_frozen(cfg, folder: data.ImageFolder, epochs: int) -> dict:
    keras.utils.set_random_seed(0)
    base = backbones.build("mobilenetv2", WEIGHTS, SIZE)
    base.trainable = False
    inputs = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inputs, models.build_head(base.output.shape[1:], cfg.head, 2)(base(inputs, training=False)))
    models.compile_for(model, "rmsprop", HEAD_LR, 2)
    t0 = time.perf_counter()
    fit = model.fit(
        SeedsLoader(folder.splits["train"], 32, True),
        validation_data=SeedsLoader(folder.splits["validation"], 32, False),
        epochs=epochs,
        verbose=0,
    )
    train_s = time.perf_counter() - t0
    _, test_acc = model.evaluate(SeedsLoader(folder.splits["test"], 32, False), verbose=0)
    return {
        "seconds": time.perf_counter() - t0,
        "train_s": train_s,
        "epochs": epochs,
        "test_acc": test_acc,
        "best_val_acc": max(fit.history["val_acc"]),
    }


def harness_frozen(epochs: int, cache_root: Path, *overrides: str) -> dict:
    cfg = config(f"epochs.head={epochs}", f"cache_dir={cache_root}", *overrides)
    t0 = time.perf_counter()
    prepared = inputs.prepare(cfg)
    keras.utils.set_random_seed(0)
    base = backbones.build("mobilenetv2", WEIGHTS, SIZE)
    store = cache.ArrayCache(cfg.cache_dir)
    keys = features.cache_keys(prepared)
    import logging

    logging.disable(logging.INFO)
    arrays = features.load_arrays(prepared, store, keys)
    trainer = Trainer(
        2, 32, 0, "rmsprop", None, lambda r, f: [], features=features.cached_features(store, keys, prepared.cfg, base)
    )
    result = frozen.train(Context(Recipe.from_cfg(prepared.cfg), arrays, trainer, lambda: base))
    logging.disable(logging.NOTSET)
    return {
        "seconds": time.perf_counter() - t0,
        "epochs": epochs,
        "test_acc": result.test["test_acc"],
        "best_val_acc": max(result.history["val_acc"]),
        "build_s": store.stats.build_s,
    }


def precision_effect(fraction: float = 0.25, epochs: int = 10) -> dict:
    """Frozen regime in fp32 and in bf16 mixed precision, cold cache each: time and test accuracy."""
    out = {}
    for precision, policy in (("fp32", "float32"), ("bf16", "mixed_bfloat16")):
        keras.mixed_precision.set_global_policy(policy)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                out[precision] = harness_frozen(
                    epochs, Path(tmp) / "cache", f"data_fraction={fraction}", f"precision={precision}"
                )
        finally:
            keras.mixed_precision.set_global_policy("float32")
    return out


# --- 2. boundary sweep through the CLI ----------------------------------------------------------------


def cli_sweep(args: list[str], study: str):
    """Run `python -m harness -m ...` on a fresh store and cache: (wall seconds, log, the study's runs)."""
    with tempfile.TemporaryDirectory() as tmp:
        store = f"sqlite:///{tmp}/mlflow.db"
        env = {**os.environ, "HARNESS_CACHE_DIR": str(Path(tmp) / "cache"), "PYTHONUNBUFFERED": "1"}
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "harness", "-m", *args, f"tracking_uri={store}"],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(proc.stdout[-3000:] + proc.stderr[-3000:])
        mlflow.set_tracking_uri(store)
        return wall, proc.stdout + proc.stderr, mlflow.search_runs(experiment_names=[study])


LAUNCH = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]\[HYDRA\] \t#(\d+) : ", re.M)
SUMMARY = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]\[HYDRA\] sweep summary", re.M)


def job_walls(log: str) -> list[float]:
    """Each job's wall time, from Hydra's launch line to the next job's (the last: to the sweep summary)."""
    from datetime import datetime

    def stamp(text: str) -> float:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()

    starts = [stamp(m.group(1)) for m in LAUNCH.finditer(log)]
    ends = [*starts[1:], stamp(SUMMARY.search(log).group(1))]
    return [b - a for a, b in zip(starts, ends, strict=True)]


def sweep_cost(boundaries: list[str], head_epochs: int, finetune_epochs: int) -> dict:
    wall, log, runs = cli_sweep(
        [
            f"unfreeze_at={','.join(boundaries)}",
            *DATA_OVERRIDES,
            "backbone=mobilenetv2",
            WEIGHTS_OVERRIDE,
            f"backbone.image_size={SIZE}",
            "regimes=[frozen,finetune]",
            f"epochs.head={head_epochs}",
            f"epochs.finetune={finetune_epochs}",
            f"head_lr={HEAD_LR}",
            "lr=1e-4",
        ],
        "default",
    )
    acc = runs[runs["tags.regime"] == "finetune"].set_index("tags.unfreeze_at")["metrics.test_acc"].to_dict()
    walls = job_walls(log)
    return {"seconds": wall, "job_s": dict(zip(boundaries, walls, strict=True)), "finetune_test_acc": acc}


# --- 3. throughput ------------------------------------------------------------------------------------


def throughput(repeats: int = 3) -> dict:
    folder = data.scan_folder(DATA)
    x = data.load_images(folder.splits["train"].files, SIZE)
    base = backbones.build("mobilenetv2", WEIGHTS, SIZE)
    stage = models.frozen_stage("mobilenetv2", SIZE, base)
    arrays = Arrays({"train": x}, {"train": folder.splits["train"].labels}, 2)
    pre = backbones.preprocess_fn("mobilenetv2")(x.astype("float32"))
    bare_s, harness_s = [], []
    base.predict(pre[:64], batch_size=64, verbose=0)  # trace both once
    compute_features(
        models.frozen_stage("mobilenetv2", SIZE, base),
        Arrays({"train": x[:64]}, {"train": arrays.y["train"][:64]}, 2),
    )
    for _ in range(repeats):  # interleaved, so drift in machine load hits both alike
        t0 = time.perf_counter()
        base.predict(pre, batch_size=FORWARD_BATCH, verbose=0)
        bare_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        compute_features(stage, arrays)
        harness_s.append(time.perf_counter() - t0)
    n = len(x)
    return {
        "images": n,
        "bare_img_s": n / statistics.median(bare_s),
        "harness_img_s": n / statistics.median(harness_s),
        "bare_runs_s": bare_s,
        "harness_runs_s": harness_s,
    }


# --- 4. overhead per job ------------------------------------------------------------------------------


def overhead(jobs: int = 4) -> dict:
    """Harness time outside data and training: once per sweep (start-up) and per job, from a tiny real sweep.

    Frozen MobileNetV2 (real weights) on 200 generated images at 96 px, one epoch, no cache: the jobs do
    almost no work, so what is left of each job's wall time after its own data and training seconds is
    Hydra, MLflow, model building and figures. Whatever a typical job does not explain (imports, the
    store's creation, the pre-check, which builds the backbone the jobs reuse, and exit) is start-up.
    """
    wall, log, runs = cli_sweep(
        [
            f"seed={','.join(str(i) for i in range(jobs))}",
            "+experiment=quickstart",
            "backbone=mobilenetv2",  # the quickstart's own backbone is VGG16; this measures MobileNetV2 at 96 px
            "backbone.image_size=96",
            WEIGHTS_OVERRIDE,
            "regimes=[frozen]",
            "cache=false",
        ],
        "quickstart",
    )
    runs = runs[runs["tags.run_kind"] == "regime"].sort_values("params.seed", key=lambda s: s.astype(int))
    train = runs["metrics.train_time_s"].astype(float).tolist()
    data_s = [float(s) for s in re.findall(r"px ready in ([0-9.]+)s", log)]
    per_job = [w - t - d for w, t, d in zip(job_walls(log), train, data_s, strict=True)]
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import harness.jobs.job, harness.training.regimes, mlflow"], check=True)
    imports = time.perf_counter() - t0
    outside = wall - sum(train) - sum(data_s)
    return {
        "jobs": jobs,
        "wall_s": wall,
        "train_s": train,
        "data_s": data_s,
        "job_overhead_s": per_job,
        "per_job_s": statistics.median(per_job[1:]),  # a job of a running sweep
        "startup_s": outside - jobs * statistics.median(per_job[1:]),  # the rest: paid once per sweep
        "amortized_s": outside / jobs,
        "imports_s": imports,
    }


def harness_frozen_cold(args: argparse.Namespace) -> dict:
    """`harness_frozen` from an empty cache, removed afterwards."""
    with tempfile.TemporaryDirectory() as tmp:
        return harness_frozen(args.epochs, Path(tmp) / "cache")


# The in-process measurements, each run by `in_own_process` (`--only PART`): part -> measure(args).
PARTS = {
    "harness_frozen": harness_frozen_cold,
    "seeds_frozen": lambda args: seeds_frozen(config(), data.scan_folder(DATA), args.seeds_epochs),
    "throughput": lambda args: throughput(),
    "precision": lambda args: precision_effect(),
}


def isolated(part: str, args: argparse.Namespace) -> dict:
    """One of PARTS measured in its own process, with this run's epochs (at the smoke setting, whose numbers mean
    nothing, in this one: a process start is most of a smoke part's time)."""
    if SMOKE:
        result = json.loads(json.dumps(PARTS[part](args), default=float))
    else:
        result = in_own_process(__file__, part, "--epochs", str(args.epochs), "--seeds-epochs", str(args.seeds_epochs))
    print(f"{part}:", result, flush=True)
    return result


def speedup_rows(results: dict, epochs: int) -> list[tuple[str, str, str, str]]:
    """Measurement 1 as table rows: the Chollet's pipeline against the harness, frozen, no augmentation."""
    seeds, harness = results["seeds_frozen"], results["harness_frozen"]
    seeds_n = seeds["train_s"] / seeds["epochs"] * epochs  # flat per-epoch cost: it caches nothing
    return [
        (
            f"frozen, {epochs} epochs, no augmentation: Chollet's pipeline",
            f"{seeds_n:.0f} s" + ("" if seeds["epochs"] == epochs else f" ({seeds['epochs']} epochs measured)"),
            f"test_acc {seeds['test_acc']:.4f}",
            "",
        ),
        (
            f"frozen, {epochs} epochs, no augmentation: harness (cold cache)",
            f"{harness['seconds']:.1f} s",
            f"test_acc {harness['test_acc']:.4f}",
            f"**{seeds_n / harness['seconds']:.1f}x faster** (target >= 20x)",
        ),
    ]


def print_table(rows: list[tuple[str, str, str, str]], out: Path | None, results: dict) -> None:
    table = "| measurement | time / rate | accuracy | vs target |\n| --- | --- | --- | --- |\n"
    table += "\n".join(f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows)
    print()
    print(table)
    if out:
        out.write_text(table + "\n\n```json\n" + json.dumps(results, indent=1, default=str) + "\n```\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds-epochs", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--boundaries", default="block_12_expand,block_14_expand,block_16_expand")
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--only-overhead", action="store_true", help="measure the start-up and per-job overhead alone")
    parser.add_argument("--only-speedup", action="store_true", help="measure the two frozen pipelines alone")
    parser.add_argument("--only", choices=PARTS, help="measure one part here and print it as JSON")
    parser.add_argument("--smoke", action="store_true", help="generated images, random weights, 1 epoch: seconds")
    args = parser.parse_args()
    if args.smoke:  # the processes it starts get their epochs as options, and the smoke setting from the environment
        args.seeds_epochs = args.epochs = args.finetune_epochs = 1
        args.boundaries = ",".join(args.boundaries.split(",")[:2])
    if not SMOKE and (not (DATA / "train").is_dir() or not Path(str(WEIGHTS)).is_file()):
        sys.exit(f"benchmark skipped: needs {DATA} and {WEIGHTS}")
    if args.only:
        print(json.dumps(PARTS[args.only](args), default=float))
        return
    if args.only_overhead:
        ov = overhead()
        print("| measurement | time |\n| --- | --- |")
        print(f"| imports (`import harness.jobs.job, harness.training.regimes, mlflow`) | {ov['imports_s']:.1f} s |")
        print(f"| start-up, once per sweep (imports, store, pre-check, exit) | {ov['startup_s']:.1f} s |")
        print(f"| overhead per job of a running sweep (median of jobs 2-{ov['jobs']}) | {ov['per_job_s']:.2f} s |")
        spread = f"overhead per job with the start-up spread over a {ov['jobs']}-job sweep"
        print(f"| {spread} | {ov['amortized_s']:.2f} s |")
        print(f"| wall time of the {ov['jobs']}-job sweep | {ov['wall_s']:.1f} s |")
        return

    machine = f"{platform.node()} {os.cpu_count()} cores, {platform.processor() or platform.machine()}"
    results: dict = {
        "machine": machine,
        "versions": {"tensorflow": __import__("tensorflow").__version__, "keras": keras.__version__},
    }
    if args.only_speedup:
        for part in ("harness_frozen", "seeds_frozen"):
            results[part] = isolated(part, args)
        print_table(speedup_rows(results, args.epochs), args.out, results)
        return
    for part in ("harness_frozen", "seeds_frozen", "throughput"):
        results[part] = isolated(part, args)
    boundaries = args.boundaries.split(",")
    results["sweep_1"] = sweep_cost(boundaries[:1], 10, args.finetune_epochs)
    results["sweep_3"] = sweep_cost(boundaries, 10, args.finetune_epochs)
    print("sweeps:", results["sweep_1"], results["sweep_3"], flush=True)
    results["overhead"] = overhead(jobs=2 if SMOKE else 4)  # a median over the jobs after the first
    print("overhead:", results["overhead"], flush=True)
    results["precision"] = isolated("precision", args)

    tp = results["throughput"]
    ratio_sweep = results["sweep_3"]["seconds"] / results["sweep_1"]["seconds"]
    ov = results["overhead"]
    rows = [
        *speedup_rows(results, args.epochs),
        (f"sweep, 1 boundary ({boundaries[0]})", f"{results['sweep_1']['seconds']:.0f} s", "", ""),
        (
            f"sweep, {len(boundaries)} boundaries ({', '.join(boundaries)})",
            f"{results['sweep_3']['seconds']:.0f} s (jobs "
            + " / ".join(f"{v:.0f}" for v in results["sweep_3"]["job_s"].values())
            + " s)",
            "",
            f"**{ratio_sweep:.2f}x** of 1 boundary (target <= 1.5x)",
        ),
        ("feature extraction: bare batched forward", f"{tp['bare_img_s']:.0f} img/s", "", ""),
        (
            "feature extraction: harness frozen stage",
            f"{tp['harness_img_s']:.0f} img/s",
            "",
            f"**{100 * tp['harness_img_s'] / tp['bare_img_s']:.0f}%** of bare (target >= 85%)",
        ),
        (
            "overhead per job of a running sweep (Hydra + MLflow + model build + figures)",
            f"{ov['per_job_s']:.2f} s",
            "",
            "target <= 3 s",
        ),
        (
            "start-up, once per sweep (imports, store, pre-check that builds the backbone, exit)",
            f"{ov['startup_s']:.1f} s",
            "",
            "",
        ),
        (
            f"overhead per job with the start-up spread over a {ov['jobs']}-job sweep",
            f"{ov['amortized_s']:.2f} s",
            "",
            "target <= 3 s",
        ),
        *(
            (
                f"frozen, 10 epochs, 25% of train, {p} (cold cache)",
                f"{r['seconds']:.1f} s",
                f"test_acc {r['test_acc']:.4f}",
                "precision effect",
            )
            for p, r in results["precision"].items()
        ),
    ]
    print_table(rows, args.out, results)


if __name__ == "__main__":
    main()
