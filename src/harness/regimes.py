"""The three training regimes of a transfer-learning study: scratch, frozen (feature extraction), finetune.

Every regime is the same stack, trained differently:

    image -> [augmentation] -> frozen stage (preprocess + layers below the cut) -> trainable stage -> head

Without augmentation the frozen stage is a pure function of the image, so its output is computed once
and the trainable part trains on it (the expensive forward pass is not repeated every epoch). With
augmentation the whole stack runs per training batch, since every epoch sees different pixels; the
validation and test images are never augmented, so they go through the frozen stage once, as above.
BatchNorm layers of a pretrained backbone always run in inference mode (`training=False`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np

from harness import backbones, stopping
from harness.augmentation import RandomAffine
from harness.progress import METRICS, ProgressLine

log = logging.getLogger(__name__)

PREDICT_BATCH = 64
# Batches run per call into the compiled train/eval function. Same batches, same updates, same numbers
# (tested): it removes the per-batch Python round trip, which dominates head epochs on cached features.
STEPS_PER_EXECUTION = 64


@dataclass
class Arrays:
    """Decoded images (uint8) and labels of each split; test may be absent."""

    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    num_classes: int

    @property
    def splits(self) -> list[str]:
        return list(self.x)

    def subset(self, splits: list[str]) -> Arrays:
        return Arrays({s: self.x[s] for s in splits}, {s: self.y[s] for s in splits}, self.num_classes)


@dataclass
class RegimeResult:
    """What one regime produced: per-epoch history, test metrics, timing and the trained model."""

    regime: str
    history: dict[str, list[float]]
    first_epoch: int
    test: dict[str, float] | None
    train_time_s: float
    model: keras.Model | None = None
    outcome: stopping.Outcome | None = None  # best epoch and why the phase stopped
    budget: stopping.Budget | None = None  # the most epochs it could run, and from which setting


@keras.saving.register_keras_serializable(package="harness")
class BackbonePreprocess(keras.layers.Layer):
    """The backbone's own preprocess_input as a layer, so saved models carry their preprocessing."""

    def __init__(self, backbone: str, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self._fn = backbones.preprocess_fn(backbone)

    def call(self, inputs):
        return self._fn(keras.ops.cast(inputs, "float32"))

    def get_config(self):
        return {**super().get_config(), "backbone": self.backbone}


class InferenceMode(keras.layers.Layer):
    """Runs a (trainable) model with `training=False` whatever the enclosing call says.

    Keras 3's functional models override a nested model's stored `training=False` with the outer
    `fit` call's `training=True` (keras/src/models/functional.py, `operation_fn`), which would update
    BatchNorm moving statistics while fine-tuning. This layer's `call` takes no `training` argument,
    so nothing is injected, and its weights stay trainable.
    """

    def __init__(self, inner: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner

    def call(self, inputs):
        return self.inner(inputs, training=False)


def augmentation(cfg) -> keras.Layer:
    """Chollet's ImageDataGenerator transforms as one layer in the graph (active only while training), seeded by
    the job's seed so that the same config gives the same pixels."""
    a = cfg.augmentation
    flip = a.horizontal_flip
    return RandomAffine(a.rotation_degrees, a.shift, a.shear, a.zoom, flip, seed=cfg.seed, name="augmentation")


def build_head(feature_shape: Sequence[int], head_cfg, num_classes: int) -> keras.Sequential:
    """Pooling -> [Dense(units, relu)] -> Dropout -> output; sigmoid for 2 classes, softmax otherwise."""
    layers: list[keras.layers.Layer] = [keras.Input(tuple(feature_shape))]
    layers.append(keras.layers.GlobalAveragePooling2D() if head_cfg.pooling == "avg" else keras.layers.Flatten())
    if head_cfg.units:
        layers.append(keras.layers.Dense(head_cfg.units, activation="relu"))
    if head_cfg.dropout:
        layers.append(keras.layers.Dropout(head_cfg.dropout))
    binary = num_classes == 2
    # float32 output under mixed precision: the loss and the probabilities stay numerically sound
    layers.append(
        keras.layers.Dense(1 if binary else num_classes, activation="sigmoid" if binary else "softmax", dtype="float32")
    )
    return keras.Sequential(layers, name="head")


def compile_for(model: keras.Model, optimizer: str, lr: float, num_classes: int) -> None:
    """A fresh optimizer at `lr`, the right loss for binary or multi-class, accuracy logged as `acc`."""
    opt = keras.optimizers.RMSprop(lr) if optimizer == "rmsprop" else keras.optimizers.Adam(lr)
    if num_classes == 2:
        loss, metric = keras.losses.BinaryCrossentropy(), keras.metrics.BinaryAccuracy(name="acc")
    else:
        loss, metric = keras.losses.SparseCategoricalCrossentropy(), keras.metrics.SparseCategoricalAccuracy(name="acc")
    model.compile(optimizer=opt, loss=loss, metrics=[metric], steps_per_execution=STEPS_PER_EXECUTION)


def targets(y: np.ndarray, num_classes: int) -> np.ndarray:
    """Labels shaped for the loss: (N, 1) float for a sigmoid output, int class ids otherwise."""
    return y.reshape(-1, 1).astype("float32") if num_classes == 2 else y


def dataset(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle_seed: int | None = None):
    """tf.data over in-memory arrays, cast to float32 on the fly; seeded shuffling for training."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(lambda a, b: (tf.cast(a, tf.float32), b), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def frozen_stage(
    backbone: str, image_size: int, lower: keras.Model | None, pool: bool = False, resize_to: int | None = None
) -> keras.Model:
    """Images -> [resizing] -> preprocessing -> the frozen layers (inference mode) [-> global average pooling].

    Its output can be cached. With `pool`, the stage ends with the head's own pooling, which has no
    weights: the cached features are then 25x smaller (MobileNetV2: 1280 numbers instead of 5x5x1280)
    and every head epoch is that much cheaper, with the same arithmetic. `resize_to` (scratch at a lower
    resolution) resizes the decoded images in the graph, antialiased as the decoder does.
    """
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = inputs
    if resize_to is not None and resize_to != image_size:
        x = keras.layers.Resizing(resize_to, resize_to, antialias=True, name="resize")(keras.ops.cast(x, "float32"))
    x = BackbonePreprocess(backbone, name="preprocess")(x)
    if lower is not None:
        backbones.set_trainable(lower, False)
        x = lower(x, training=False)
    if pool:
        x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, x, name="frozen_stage")


def pooling(shape: Sequence[int]) -> keras.Model:
    """Global average pooling alone, as a model: derives pooled features from cached top features."""
    inputs = keras.Input(tuple(shape))
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D(name="pool")(inputs), name="pooling")


def above_pooling(head: keras.Sequential) -> keras.Sequential:
    """The head's layers after its pooling layer, sharing their weights: trained on pooled features."""
    return keras.Sequential(head.layers[1:], name="head_above_pooling")


def predict_by_split(model: keras.Model, xs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`model` over every split's inputs in one batched predict call (one trace), as float32, split back."""
    x = np.concatenate(list(xs.values()))
    out = model.predict(dataset(x, np.zeros(len(x), np.int32), PREDICT_BATCH), verbose=0).astype("float32")
    bounds = np.cumsum([0, *(len(v) for v in xs.values())])
    return {s: out[a:b] for s, a, b in zip(xs, bounds[:-1], bounds[1:], strict=True)}


def compute_features(stage: keras.Model, arrays: Arrays) -> dict[str, np.ndarray]:
    """The frozen stage's output for every image of every split."""
    return predict_by_split(stage, arrays.x)


class HeldOutValidation(keras.callbacks.Callback):
    """Validation at the end of each epoch, on the frozen stage's outputs rather than on pixels.

    With augmentation the trained model starts at the pixels, and fit's own validation would run the frozen
    trunk over the validation images every epoch, though they are never augmented. Here they go through
    the stage once (cached like any features) and each epoch evaluates only the part that trains, sharing
    its weights. Listed first, so the stopping rule, the console and the history all read these numbers.
    """

    def __init__(self, on_features: keras.Model, data):
        super().__init__()
        self.on_features, self.data = on_features, data

    def on_epoch_end(self, epoch, logs=None):
        loss, acc = self.on_features.evaluate(self.data, verbose=0)
        logs["val_loss"], logs["val_acc"] = float(loss), float(acc)


@dataclass
class Trainer:
    """Fits `trainable` + `head` above a frozen stage, on cached features or on augmented images (then only the
    training split goes through the stage every epoch)."""

    num_classes: int
    batch_size: int
    seed: int
    optimizer: str
    augment: keras.Layer | None
    callbacks: Callable[[str, int], list[keras.callbacks.Callback]]
    # (stage, arrays, cut) -> features by split; the job swaps in a cached version
    features: Callable[[keras.Model, Arrays, str], dict[str, np.ndarray]] = field(
        default=lambda stage, arrays, cut: compute_features(stage, arrays)
    )
    rule: stopping.Rule = field(default_factory=stopping.Rule)  # the same stopping rule for every phase

    def run(
        self,
        regime: str,
        arrays: Arrays,
        cut: str,  # where the frozen stage ends: "pixels", "top", "pooled" or the unfreeze_at layer
        stage: keras.Model,
        trainable: keras.Model | None,
        trainable_training: bool | None,  # False: BatchNorm in inference mode (fine-tuning)
        head: keras.Model,
        lr: float,
        first_epoch: int,
        epochs: int,
    ) -> RegimeResult:
        """Train for at most `epochs` epochs numbered from `first_epoch` (fewer when the stopping rule ends the
        phase, which then restores the best epoch's weights), then evaluate on test if present."""
        keras.utils.set_random_seed(self.seed)
        t0 = time.perf_counter()

        def above(x):  # the trained part, over the frozen stage's output
            if trainable is not None:
                x = InferenceMode(trainable, name="trainable")(x) if trainable_training is False else trainable(x)
            return head(x)

        features_in = keras.Input(stage.output.shape[1:], name="features")
        on_features = keras.Model(features_in, above(features_in), name=f"{regime}_on_features")
        compile_for(on_features, self.optimizer, lr, self.num_classes)
        if self.augment is None:
            model, inputs = on_features, self.features(stage, arrays, cut)
        else:  # new pixels every epoch for training; validation and test are never augmented: staged once
            image_in = keras.Input(stage.input.shape[1:], name="image")
            model = keras.Model(image_in, above(InferenceMode(stage, name="frozen")(self.augment(image_in))))
            compile_for(model, self.optimizer, lr, self.num_classes)
            staged = self.features(stage, arrays.subset([s for s in arrays.x if s != "train"]), cut)
            inputs = {"train": arrays.x["train"], **staged}

        def data(split: str, shuffle: bool):
            y = targets(arrays.y[split], self.num_classes)
            return dataset(inputs[split], y, self.batch_size, self.seed if shuffle else None)

        last = first_epoch + epochs
        stopper = stopping.stopper(self.rule)
        # on features the model is on_features, and fit validates it; on pixels the callback does, on features
        held_out = [] if model is on_features else [HeldOutValidation(on_features, data("validation", False))]
        fit = model.fit(
            data("train", True),
            validation_data=data("validation", False) if model is on_features else None,
            initial_epoch=first_epoch,
            epochs=last,
            verbose=0,
            shuffle=False,  # the tf.data pipeline shuffles, seeded
            callbacks=[*held_out, ProgressLine(regime, last), *self.callbacks(regime, first_epoch), stopper],
        )
        train_time = time.perf_counter() - t0
        history = {k: [float(v) for v in fit.history[k]] for k in METRICS}
        test = None
        if "test" in inputs:
            loss, acc = on_features.evaluate(data("test", False), verbose=0)
            test = {"test_loss": float(loss), "test_acc": float(acc)}
        return RegimeResult(regime, history, first_epoch, test, train_time, outcome=stopper.outcome(epochs))


def full_model(backbone: str, image_size: int, base: keras.Model, head: keras.Model, training=False) -> keras.Model:
    """Image -> preprocess -> backbone -> head: the deployable classifier (what log_model saves)."""
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = BackbonePreprocess(backbone, name="preprocess")(inputs)
    return keras.Model(inputs, head(base(x, training=training)), name=f"{backbone}_classifier")


def count_trainable(model: keras.Model) -> int:
    """Number of trainable weight tensors (Chollet's `len(model.trainable_weights)` check)."""
    return len(model.trainable_weights)


# --- the three regimes ----------------------------------------------------------------------------


@dataclass
class FrozenState:
    """The trained frozen model, which fine-tuning starts from, and the epoch number fine-tuning continues at."""

    base: keras.Model
    head: keras.Model
    next_epoch: int


def _walk(layer: keras.layers.Layer):
    yield layer
    for inner in getattr(layer, "layers", ()):
        yield from _walk(inner)


def set_bn_momentum(model: keras.Model, momentum: float | None) -> int:
    """Set every BatchNormalization layer's moving-average momentum (None: leave the architecture's); returns
    how many layers it changed.

    A network trained from scratch on a small dataset runs a few hundred steps, and MobileNetV2's 0.999
    averages over ~1,000: its moving statistics, which inference uses, then still mostly hold their initial
    mean 0 / variance 1, and every validation and test image gets the same class although training
    accuracy rises. Momentum is read when the layer is called, so setting it before training is enough.
    """
    if momentum is None:
        return 0
    layers = [layer for layer in _walk(model) if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.momentum = float(momentum)
    return len(layers)


def train_scratch(cfg, arrays: Arrays, trainer: Trainer) -> RegimeResult:
    """Random-init backbone, everything trained (BatchNorm in training mode, at `scratch.bn_momentum`), at
    head_lr, on images resized in the graph to `scratch.image_size` when set."""
    keras.utils.set_random_seed(cfg.seed)  # before any layer exists: initial weights follow the seed
    name, size = cfg.backbone.name, cfg.backbone.image_size
    scratch_size = cfg.scratch.image_size or size
    base = backbones.build(name, None, scratch_size)
    changed = set_bn_momentum(base, cfg.scratch.bn_momentum)
    log.info("scratch  %s at %d px, BatchNorm momentum %s (%d layers)", name, scratch_size,
             cfg.scratch.bn_momentum if changed else "as built", changed)  # fmt: skip
    head = build_head(base.output.shape[1:], cfg.head, arrays.num_classes)
    stage = frozen_stage(name, size, None, resize_to=scratch_size)
    budget = stopping.phase_budget(cfg, "scratch", len(arrays.y["train"]))
    result = trainer.run("scratch", arrays, "pixels", stage, base, None, head, cfg.head_lr, 0, budget.epochs)
    result.budget = budget
    if cfg.log_model:
        result.model = full_model(name, scratch_size, base, head)
    return result


def train_frozen(cfg, arrays: Arrays, trainer: Trainer, base: keras.Model) -> tuple[RegimeResult, FrozenState]:
    """Feature extraction: the pretrained backbone frozen whole, a new head trained at head_lr."""
    keras.utils.set_random_seed(cfg.seed)
    name, size = cfg.backbone.name, cfg.backbone.image_size
    cut = backbones.frozen_cut(cfg.head.pooling, cfg.augment)
    stage = frozen_stage(name, size, base, pool=cut == "pooled")
    head = build_head(base.output.shape[1:], cfg.head, arrays.num_classes)
    trained = above_pooling(head) if cut == "pooled" else head
    budget = stopping.phase_budget(cfg, "frozen", len(arrays.y["train"]))
    result = trainer.run("frozen", arrays, cut, stage, None, None, trained, cfg.head_lr, 0, budget.epochs)
    result.budget = budget
    if cfg.log_model:
        result.model = full_model(name, size, base, head)  # logged before fine-tuning changes `base`
    return result, FrozenState(base, head, len(result.history["loss"]))


def save_frozen(result: RegimeResult, state: FrozenState, folder) -> None:
    """Store a trained head phase (head variables, history, test metrics) for reuse by later jobs."""
    import json
    from pathlib import Path

    # every variable, the dropout layer's seed-generator state included: `save_weights` leaves that out, and
    # fine-tuning from a head with a reset RNG state draws other dropout masks than the same job would
    np.savez(Path(folder) / "head_variables.npz", *[v.numpy() for v in state.head.variables])
    record = {"history": result.history, "test": result.test, "train_time_s": result.train_time_s}
    record["outcome"] = result.outcome.as_record() if result.outcome else None  # the decision, reused as made
    (Path(folder) / "result.json").write_text(json.dumps(record))


def restore_frozen(cfg, arrays: Arrays, base: keras.Model, folder) -> tuple[RegimeResult, FrozenState]:
    """The frozen regime from a stored head phase: same head weights, same recorded history and test metrics."""
    import json
    from pathlib import Path

    keras.utils.set_random_seed(cfg.seed)
    name, size = cfg.backbone.name, cfg.backbone.image_size
    frozen_stage(name, size, base)  # freezes the base exactly as training did
    head = build_head(base.output.shape[1:], cfg.head, arrays.num_classes)
    with np.load(Path(folder) / "head_variables.npz") as stored:
        for i, variable in enumerate(head.variables):
            variable.assign(stored[f"arr_{i}"])
    record = json.loads((Path(folder) / "result.json").read_text())
    result = RegimeResult("frozen", record["history"], 0, record["test"], record["train_time_s"])
    result.outcome = stopping.Outcome(**record["outcome"]) if record.get("outcome") else None
    result.budget = stopping.phase_budget(cfg, "frozen", len(arrays.y["train"]))
    if cfg.log_model:
        result.model = full_model(name, size, base, head)
    return result, FrozenState(base, head, len(result.history["loss"]))


def finetune_parts(cfg, state: FrozenState) -> tuple[keras.Model, keras.Model]:
    """Cut the trained frozen model at `unfreeze_at`: (frozen stage below, trainable upper backbone)."""
    lower, upper = backbones.split_at(state.base, cfg.unfreeze_at)
    stage = frozen_stage(cfg.backbone.name, cfg.backbone.image_size, lower)
    backbones.set_trainable(upper, True)
    return stage, upper


def train_finetune(cfg, arrays: Arrays, trainer: Trainer, state: FrozenState) -> RegimeResult:
    """Unfreeze `unfreeze_at` and above, recompile with a fresh optimizer at `lr`, continue the epochs after
    those the head phase ran (all of them, unless the stopping rule ended it early)."""
    stage, upper = finetune_parts(cfg, state)
    budget = stopping.phase_budget(cfg, "finetune", len(arrays.y["train"]))
    args = (cfg.unfreeze_at, stage, upper, False, state.head, cfg.lr, state.next_epoch, budget.epochs)
    result = trainer.run("finetune", arrays, *args)
    result.budget = budget
    if cfg.log_model:
        result.model = full_model(cfg.backbone.name, cfg.backbone.image_size, state.base, state.head)
    return result
