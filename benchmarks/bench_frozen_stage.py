"""Benchmark: the harness's frozen stage against Keras' `predict` and a bare graph call, side by side in one run.

    python benchmarks/bench_frozen_stage.py [--repeats 3] [--epochs 30] [--smoke]

Needs ../shared (the photographs and the MobileNetV2 weights); prints Markdown tables. MobileNetV2 at 160 px
with its ImageNet weights, over the 4,000 shared photographs (train, validation and test), the model the
harness caches from (preprocessing, trunk, pooling):

1. throughput, interleaved repetitions, medians: `model.predict(x, batch_size=64)`; a bare
   `tf.function(lambda b: model(b, training=False))` called per batch on arrays already in memory; the
   harness's frozen stage (`trainer.compute_features`: a read-ahead thread, one traced graph, written into one array);
   and the graph path at other batch sizes, which is how `forward.FORWARD_BATCH` was chosen;
2. a 30-epoch frozen run through the CLI (`python -m harness`, cold cache, early stopping off), into a new store
   and into an existing one, against the floor (imports + predict): importing TensorFlow, Keras, MLflow and Hydra,
   plus `predict` over the same 4,000 images, timed in a fresh process in the same round (`predict`'s pass
   sometimes takes twice as long, through its tf.data feed: RESULTS.md, 2026-12-07; each round's ratios compare
   neighbours). That process also times what any frozen run must do besides: scan the folder and decode the
   JPEGs (the harness's decoder, the same pixels), build the backbone with its weights, open a new SQLite store,
   and a bare Keras `fit` of the head for the same epochs on the features; the imports, a bare graph call over
   the images (the fastest forward pass measured) and these are the least a run can take, whatever its code;
3. the imports that run before the first job, each alone in a fresh process.

`--smoke`: 96 generated images, random weights at 32 px, one round, one epoch, Hydra's import alone: checks the
script in seconds (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from measure import in_own_process  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED = (ROOT / ".." / "shared").resolve()
DATA = SHARED / "data" / "cats_and_dogs_small"
WEIGHTS = SHARED / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
IMPORTS = ("tensorflow", "keras", "mlflow", "hydra", "harness.jobs.job")


@dataclass(frozen=True)
class Setting:
    """What is measured: the photographs and weights, or the smoke run's generated images and random weights."""

    folder: Path
    weights: str | None
    size: int
    imports: tuple[str, ...]

    @property
    def data(self) -> list[str]:
        return ["data=cats_and_dogs_small"] if self.folder == DATA else ["data=folder", f"data.path={self.folder}"]


FULL = Setting(DATA, str(WEIGHTS), 160, IMPORTS)


def smoke(tmp: Path) -> Setting:
    from harness import data

    return Setting(data.ensure_synthetic(tmp, {"train": 32, "validation": 8, "test": 8}), None, 32, ("hydra",))


def photographs(s: Setting) -> np.ndarray:
    from harness import data

    folder = data.scan_folder(s.folder)
    return np.concatenate([data.load_images(folder.splits[k].files, s.size) for k in ("train", "validation", "test")])


def throughput(s: Setting, repeats: int) -> tuple[int, dict[str, list[float]]]:
    """(images, seconds per pass over them by method): `repeats` interleaved rounds after one warm-up each."""
    import tensorflow as tf

    from harness.training import backbones, forward, models
    from harness.training.trainer import Arrays, compute_features

    x = photographs(s)
    stage = models.frozen_stage("mobilenetv2", s.size, backbones.build("mobilenetv2", s.weights, s.size), pool=True)
    bare = tf.function(lambda b: stage(b, training=False))
    batches = [x[i : i + 64].astype("float32") for i in range(0, len(x), 64)]  # in memory before the clock starts
    arrays = Arrays({"all": x}, {"all": np.zeros(len(x), np.int32)}, 2)
    methods = {
        "predict (batch 64)": lambda: stage.predict(x, batch_size=64, verbose=0),
        "bare graph call (batch 64)": lambda: [bare(b) for b in batches],
        "harness frozen stage (batch 64)": lambda: compute_features(stage, arrays),
        **{f"harness graph path, batch {n}": (lambda n=n: forward.forward(stage, x, n)) for n in (32, 128)},
    }
    reference = stage.predict(x[:256], batch_size=64, verbose=0)
    for run in methods.values():  # warm-up: traces, and the same outputs (checked on 256 images)
        run()
    assert np.array_equal(forward.forward(stage, x[:256]), reference)
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, run in methods.items():
            t0 = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - t0)
    return len(x), seconds


def frozen_run(s: Setting, epochs: int, existing_store: bool = False) -> tuple[float, float]:
    """(wall seconds, test accuracy) of `python -m harness` training the frozen regime for `epochs` epochs, cold
    cache, into a new store, or with `existing_store` into one made before the clock starts (as a study's later
    runs find theirs: MLflow's schema migrations are paid once per store)."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        if existing_store:
            mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
            mlflow.search_experiments()  # creates the store's tables, as its first run did
        cmd = [
            sys.executable,
            "-m",
            "harness",
            *s.data,
            "backbone=mobilenetv2",
            f"backbone.weights={s.weights or 'null'}",
            f"backbone.image_size={s.size}",
            "regimes=[frozen]",
            f"epochs.head={epochs}",
            "early_stopping.enabled=false",
            f"cache_dir={tmp}/cache",
            f"tracking_uri=sqlite:///{tmp}/mlflow.db",
            "study=bench_frozen_stage",
        ]
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=tmp, check=True, capture_output=True)
        wall = time.perf_counter() - t0
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        runs = mlflow.search_runs(experiment_names=["bench_frozen_stage"], filter_string="tags.regime = 'frozen'")
        return wall, float(runs["metrics.test_acc"].iloc[0])


def least_work(s: Setting, epochs: int) -> dict[str, float]:
    """Seconds of each part of the least a frozen run must do, in a fresh process (the floor's imports first)."""
    spec = json.dumps({"folder": str(s.folder), "weights": s.weights, "size": s.size, "epochs": epochs})
    return in_own_process(__file__, "least-work", "--spec", spec)


def least_work_child(given: str) -> None:
    """`least_work`'s side, in the new interpreter: prints one JSON line of seconds by part."""
    t0 = time.perf_counter()
    import hydra  # noqa: F401
    import keras
    import mlflow
    import tensorflow as tf

    seconds = {"imports": time.perf_counter() - t0}
    spec = json.loads(given)
    s = Setting(Path(spec["folder"]), spec["weights"], spec["size"], ())

    def timed(part: str, fn):
        t = time.perf_counter()
        value = fn()
        seconds[part] = time.perf_counter() - t
        return value

    from harness import data
    from harness.training import backbones, models

    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        timed("new store", mlflow.search_experiments)
    base = timed("backbone build", lambda: backbones.build("mobilenetv2", s.weights, s.size))
    x = timed("scan and decoding", lambda: photographs(s))
    stage = models.frozen_stage("mobilenetv2", s.size, base, pool=True)
    stage.predict(x[:64], batch_size=64, verbose=0)  # traced before the clock starts, as in part 1
    features = timed("predict", lambda: stage.predict(x, batch_size=64, verbose=0))
    bare = tf.function(lambda b: stage(b, training=False))
    batches = [x[i : i + 64].astype("float32") for i in range(0, len(x), 64)]
    bare(batches[0])  # traced before the clock starts
    timed("graph call", lambda: [bare(b) for b in batches])
    # the head as the harness trains it (Dense 256, dropout 0.5, RMSprop, batch 32, its 64 steps per call) on the
    # training split's features, validated on the validation split's each epoch: the least its epochs can cost
    y = np.random.default_rng(0).integers(0, 2, len(x)).reshape(-1, 1).astype("float32")
    splits = data.scan_folder(s.folder).splits
    n_train, n_val = len(splits["train"]), len(splits["validation"])
    train = tf.data.Dataset.from_tensor_slices((features[:n_train], y[:n_train])).shuffle(n_train, seed=0).batch(32)
    held_out = slice(n_train, n_train + n_val)
    validation = tf.data.Dataset.from_tensor_slices((features[held_out], y[held_out])).batch(32)
    keras.utils.set_random_seed(0)
    head = keras.Sequential([keras.Input(features.shape[1:]), keras.layers.Dense(256, activation="relu"),
                             keras.layers.Dropout(0.5), keras.layers.Dense(1, activation="sigmoid")])  # fmt: skip
    head.compile(keras.optimizers.RMSprop(1e-4), "binary_crossentropy", metrics=["accuracy"], steps_per_execution=64)
    timed("head fit", lambda: head.fit(train, validation_data=validation, epochs=spec["epochs"], verbose=0))
    print(json.dumps(seconds))


def import_seconds(module: str, runs: int = 3) -> float:
    """Seconds to import `module` in a fresh interpreter (median of `runs`), the interpreter's start-up subtracted."""

    def run(code: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        return time.perf_counter() - t0

    return statistics.median(run(f"import {module}") for _ in range(runs)) - statistics.median(
        run("pass") for _ in range(runs)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--smoke", action="store_true", help="generated images, random weights at 32 px, one round")
    parser.add_argument("--only", choices=["least-work"], help=argparse.SUPPRESS)  # part 2's fresh process
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        least_work_child(args.spec)
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.smoke:
            args.repeats, args.epochs = 1, 1
        report(smoke(Path(tmp)) if args.smoke else FULL, args)


def report(setting: Setting, args: argparse.Namespace) -> None:
    n, seconds = throughput(setting, args.repeats)
    what = "shared photographs" if setting.folder == DATA else "generated images"
    rate = {name: n / statistics.median(s) for name, s in seconds.items()}
    predict, bare = rate["predict (batch 64)"], rate["bare graph call (batch 64)"]
    print(f"### Throughput over the {n} {what}, MobileNetV2 at {setting.size} px ({args.repeats} interleaved rounds)\n")
    print("| forward pass | images/s (median) | vs predict | vs bare graph call | seconds per round |")
    print("| --- | --- | --- | --- | --- |")
    for name, s in seconds.items():
        runs = " / ".join(f"{v:.1f}" for v in s)
        print(f"| {name} | {rate[name]:.0f} | {rate[name] / predict:.2f}x | {rate[name] / bare:.0%} | {runs} |")

    runs_each = 1 if setting.imports != IMPORTS else 3
    imports = {m: import_seconds(m, runs_each) for m in setting.imports}
    libraries = ", ".join(m for m in setting.imports if not m.startswith("harness"))
    together = import_seconds(libraries, runs_each)
    rounds = []
    for _ in range(args.repeats):  # neighbours in time: the floor, then the two CLI runs
        least = least_work(setting, args.epochs)
        rounds.append((least, frozen_run(setting, args.epochs), frozen_run(setting, args.epochs, existing_store=True)))
    print(f"\n### A {args.epochs}-epoch frozen run through the CLI, cold cache, against imports + predict, by round\n")
    extras = ("scan and decoding", "backbone build", "new store", "head fit")
    print("| round | imports | predict | floor: imports + predict | graph call | " + " | ".join(extras)
          + " | least: imports + graph call + these | CLI, new store | CLI, existing store |")  # fmt: skip
    print("| --- " * (8 + len(extras)) + "|")
    ratios: dict[str, list[float]] = {"least": [], "new": [], "existing": []}
    for i, (least, (new, _), (existing, _)) in enumerate(rounds, 1):
        floor = least["imports"] + least["predict"]
        lowest = least["imports"] + least["graph call"] + sum(least[e] for e in extras)
        for key, value in (("least", lowest), ("new", new), ("existing", existing)):
            ratios[key].append(value / floor)
        cells = [least["imports"], least["predict"], floor, least["graph call"], *(least[e] for e in extras)]
        against = [f"{v:.1f} ({v / floor:.2f}x)" for v in (lowest, new, existing)]
        print(f"| {i} | " + " | ".join([*(f"{v:.1f}" for v in cells), *against]) + " |")
    median = {k: statistics.median(v) for k, v in ratios.items()}
    print(
        f"\nMedian ratio to the floor over {args.repeats} rounds: the least any run needs {median['least']:.2f}x, "
        f"the harness into a new store {median['new']:.2f}x, into an existing store {median['existing']:.2f}x"
    )
    print("\n| import, alone in a fresh process | seconds |")
    print("| --- | --- |")
    for module, s in imports.items():
        print(f"| {module} | {s:.1f} |")
    print(f"| {libraries} together | {together:.1f} |")
    accuracies = " / ".join(f"{acc:.4f}" for _, run_new, run_existing in rounds for _, acc in (run_new, run_existing))
    print(f"\nTest accuracy of the frozen runs (each round: new store, existing store): {accuracies}")


if __name__ == "__main__":
    main()
