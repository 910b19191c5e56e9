"""Benchmark: seconds per epoch of the frozen regime with augmentation, Chollet's pipeline against the harness.

    python benchmarks/bench_augment.py [--epochs 4] [--out /tmp/bench_augment.md] [--smoke]

Chollet's best feature-extraction result (Deep Learning with Python 5.3, VGG16: ~90% -> ~96%) needs
augmentation, so the frozen trunk sees new pixels every epoch and its forward pass cannot be cached. What
can be removed is everything else. Measured side by side, MobileNetV2 at 160 px with the real ImageNet
weights on cats_and_dogs_small (2,000 train / 1,000 validation), frozen backbone, GAP head:

1. Chollet's pipeline: ImageDataGenerator's work per image, in Python - PIL decode and resize, a random
   affine transform (rotation 40 degrees, shift 0.2, shear 0.2, zoom 0.2, horizontal flip) applied by
   `scipy.ndimage.affine_transform` (order 1, mode nearest, as `apply_affine_transform` does), then
   preprocess_input - feeding one `fit` over the frozen network;
2. the harness (`augment=true`): images decoded once (cached uint8), the same transform as one Keras layer
   inside the graph (`harness.training.augmentation.RandomAffine`, one resampling per image), the frozen trunk in
   inference mode over the training images, the head trained; the validation images, never augmented, go
   through the trunk once and each epoch evaluates the head on them;
3. a bare `predict` of the trunk over the 2,000 training images (the floor before the harness's own inference
   passes left `predict`: benchmarks/bench_frozen_stage.py);
4. the floor: the same forward pass as a bare graph call per batch, what any augmented epoch must compute.

Each epoch includes its validation pass. The first epoch (graph tracing) is reported apart, and the
harness's one-off work (decoding, staging the validation images) beside it; the per-epoch figure is the
median of the rest. Each pipeline runs in a process of its own, one after the other: run in one process,
each slowed the next (the floor measured 43 s per epoch after the other two, the harness alone 30-43 s).

`--smoke`: two epochs of each pipeline on 64 generated images with random weights at 32 px (bench_sweep's smoke
setting): checks the script in seconds, its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from bench_sweep import DATA, SIZE, SMOKE, WEIGHTS, WEIGHTS_OVERRIDE, SeedsLoader  # noqa: E402 (same data, weights, loader)
from hydra import compose, initialize_config_dir  # noqa: E402
from measure import in_own_process  # noqa: E402
from scipy import ndimage  # noqa: E402

from harness import data  # noqa: E402
from harness.config import convert  # noqa: E402
from harness.paths import conf_dir  # noqa: E402
from harness.training import augmentation, backbones, models  # noqa: E402
from harness.training.regime import Context, Recipe  # noqa: E402
from harness.training.regimes import frozen  # noqa: E402
from harness.training.trainer import Arrays, Trainer  # noqa: E402

BATCH = 32


class EpochTimer(keras.callbacks.Callback):
    """Wall seconds of each epoch, its validation included."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._t0)


def random_affine(image: np.ndarray, rng: np.random.Generator, cfg) -> np.ndarray:
    """ImageDataGenerator.random_transform + apply_affine_transform, for one HxWxC float image."""
    a = cfg.augmentation
    h, w = image.shape[:2]
    theta = np.deg2rad(rng.uniform(-a.rotation_degrees, a.rotation_degrees))
    tx, ty = rng.uniform(-a.shift, a.shift) * h, rng.uniform(-a.shift, a.shift) * w
    shear = np.deg2rad(rng.uniform(-a.shear, a.shear))  # ImageDataGenerator's shear_range is in degrees
    zx, zy = rng.uniform(1 - a.zoom, 1 + a.zoom, 2)
    rotation = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    shift = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
    shearing = np.array([[1, -np.sin(shear), 0], [0, np.cos(shear), 0], [0, 0, 1]])
    zoom = np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]])
    matrix = rotation @ shift @ shearing @ zoom
    offset = np.array([[1, 0, h / 2 - 0.5], [0, 1, w / 2 - 0.5], [0, 0, 1]])
    reset = np.array([[1, 0, -h / 2 + 0.5], [0, 1, -w / 2 + 0.5], [0, 0, 1]])
    matrix = offset @ matrix @ reset
    out = np.stack(
        [
            ndimage.affine_transform(image[..., c], matrix[:2, :2], matrix[:2, 2], order=1, mode="nearest")
            for c in range(image.shape[2])
        ],
        axis=-1,
    )
    if a.horizontal_flip and rng.random() < 0.5:
        out = out[:, ::-1]
    return out


class AugmentingLoader(SeedsLoader):
    """bench_sweep's flow_from_directory loader with ImageDataGenerator's augmentation: per image, in Python."""

    def __init__(self, split: data.Split, cfg, augment: bool, seed: int = 0):
        self.cfg = cfg
        super().__init__(split, BATCH, shuffle=augment, seed=seed)

    def transform(self, array: np.ndarray) -> np.ndarray:
        return random_affine(array, self.rng, self.cfg) if self.shuffle else array


def config():
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(
            config_name="config",
            overrides=[
                "backbone=mobilenetv2",
                WEIGHTS_OVERRIDE,
                f"backbone.image_size={SIZE}",
                "regimes=[frozen]",
                "augment=true",
                "head.units=0",
                "head.dropout=0.2",
            ],
        )


def chollet(cfg, folder: data.ImageFolder, epochs: int) -> list[float]:
    keras.utils.set_random_seed(0)
    base = backbones.build("mobilenetv2", WEIGHTS, SIZE)
    base.trainable = False
    inputs = keras.Input((SIZE, SIZE, 3))
    head = models.build_head(base.output.shape[1:], cfg.head, 2)
    model = keras.Model(inputs, head(base(inputs, training=False)))
    models.compile_for(model, "rmsprop", cfg.head_lr, 2)
    timer = EpochTimer()
    model.fit(
        AugmentingLoader(folder.splits["train"], cfg, True),
        validation_data=AugmentingLoader(folder.splits["validation"], cfg, False),
        epochs=epochs,
        verbose=0,
        callbacks=[timer],
    )
    return timer.seconds


def harness(cfg, folder: data.ImageFolder, epochs: int) -> tuple[float, list[float]]:
    """(one-off seconds: decoding and staging the validation images, seconds per epoch of the harness's augmented
    frozen regime)."""
    t0 = time.perf_counter()
    splits = {s: folder.splits[s] for s in ("train", "validation")}
    x = {s: data.load_images(v.files, SIZE) for s, v in splits.items()}
    arrays = Arrays(x, {s: v.labels for s, v in splits.items()}, 2)
    timer = EpochTimer()
    cfg.epochs.head = epochs
    keras.utils.set_random_seed(0)
    base = backbones.build("mobilenetv2", WEIGHTS, SIZE)
    augment = augmentation.from_settings(cfg.augmentation, cfg.seed)
    trainer = Trainer(2, BATCH, 0, "rmsprop", augment, lambda r, f: [timer])
    frozen.train(Context(Recipe.from_cfg(convert(cfg)), arrays, trainer, lambda: base))
    return time.perf_counter() - t0 - sum(timer.seconds), timer.seconds


def bare(folder: data.ImageFolder, epochs: int) -> list[float]:
    """A forward pass of the trunk over the training images, per 'epoch'."""
    x = data.load_images(folder.splits["train"].files, SIZE)
    pre = backbones.preprocess_fn("mobilenetv2")(x.astype("float32"))
    base = backbones.build("mobilenetv2", WEIGHTS, SIZE)
    seconds = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        base.predict(pre, batch_size=BATCH, verbose=0)
        seconds.append(time.perf_counter() - t0)
    return seconds


def bare_graph(folder: data.ImageFolder, epochs: int) -> list[float]:
    """The same pass as `bare`, as a bare graph call per batch (no `predict` machinery): the floor."""
    import tensorflow as tf

    x = data.load_images(folder.splits["train"].files, SIZE)
    pre = backbones.preprocess_fn("mobilenetv2")(x.astype("float32"))
    base = backbones.build("mobilenetv2", WEIGHTS, SIZE)
    call = tf.function(lambda b: base(b, training=False))
    batches = [pre[i : i + BATCH] for i in range(0, len(pre), BATCH)]
    seconds = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        for batch in batches:
            call(batch)
        seconds.append(time.perf_counter() - t0)
    return seconds


def cpu() -> str:
    """The CPU model and whether it has native bf16, from /proc/cpuinfo (machines differ here)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = "avx512_bf16" if "avx512_bf16" in info else ("avx2" if "avx2" in info else "no avx2")
    return f"{model} ({flags})"


PIPELINES = {
    "chollet": "Chollet's pipeline (ImageDataGenerator-style, augmenting per image in Python)",
    "harness": "harness, augment=true (decoded once, augmentation in the graph)",
    "predict": "bare `predict` of the trunk over the training images",
    "floor": "floor: bare graph call of the trunk per batch over the training images",
}


def measure(pipeline: str, epochs: int) -> dict:
    """One pipeline's seconds per epoch (and, for the harness, its one-off seconds), in this process."""
    logging.disable(logging.INFO)
    cfg = config()
    folder = data.scan_folder(DATA)
    if pipeline == "chollet":
        return {"epochs": chollet(cfg, folder, epochs)}
    if pipeline == "harness":
        one_off_s, seconds = harness(cfg, folder, epochs)
        return {"epochs": seconds, "one_off": one_off_s}
    if pipeline == "predict":
        return {"epochs": bare(folder, epochs)}
    return {"epochs": bare_graph(folder, epochs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--only", choices=PIPELINES, help="measure one pipeline here and print it as JSON")
    parser.add_argument("--smoke", action="store_true", help="generated images, random weights, 2 epochs: seconds")
    args = parser.parse_args()
    if args.smoke:  # the processes it starts get their epochs as an option, and the smoke setting from the environment
        args.epochs = 2
    if not SMOKE and (not (DATA.is_dir() and Path(str(WEIGHTS)).is_file())):
        raise SystemExit(f"needs the shared photographs and weights: {DATA}, {WEIGHTS}")
    if args.only:
        print(json.dumps(measure(args.only, args.epochs)))
        return
    results = {}
    for pipeline in PIPELINES:  # a fresh process each: no pipeline inherits another's threads or memory (at the
        # smoke setting, whose numbers mean nothing, this one: a process start is most of a smoke pipeline's time)
        options = ("--epochs", str(args.epochs))
        results[pipeline] = measure(pipeline, args.epochs) if SMOKE else in_own_process(__file__, pipeline, *options)

    floor = statistics.median(results["floor"]["epochs"][1:])
    lines = [
        f"Machine: {cpu()}, {os.cpu_count()} CPUs; keras {keras.__version__}.",
        f"MobileNetV2 at {SIZE} px, frozen, batch {BATCH}, {args.epochs} epochs each, one process per pipeline; the"
        f" harness's one-off work (decoding, staging the validation images): {results['harness']['one_off']:.1f} s.",
        "",
        "| pipeline | first epoch (s) | s/epoch (median of the rest) | vs floor |",
        "| --- | --- | --- | --- |",
    ]
    for pipeline, name in PIPELINES.items():
        seconds = results[pipeline]["epochs"]
        median = statistics.median(seconds[1:])
        lines.append(f"| {name} | {seconds[0]:.1f} | {median:.1f} | {median / floor:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
