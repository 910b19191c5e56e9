"""The models of a study, as Keras layers: the backbone's preprocessing, the frozen stage, heads, Chollet's small
convnet, and what they are compiled and fed with.

Every regime is the same stack, trained differently:

    image -> [augmentation] -> frozen stage (preprocess + layers below the cut) -> trainable stage -> head

BatchNorm layers of a pretrained backbone always run in inference mode (`training=False`).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from harness.training import backbones

# Batches run per call into the compiled train/eval function. Same batches, same updates, same numbers
# (tested): it removes the per-batch Python round trip, which dominates head epochs on cached features.
STEPS_PER_EXECUTION = 64


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


class TrainingPenalty(keras.layers.Layer):
    """Passes its input through and, while training, adds `penalty()` to the loss: a regulariser of the trained
    weights (L2-SP) that validation and test losses leave out, so theirs stay comparable between regimes."""

    def __init__(self, penalty, **kwargs):
        super().__init__(**kwargs)
        self.penalty = penalty

    def call(self, inputs, training=None):
        if training:
            self.add_loss(self.penalty())
        return inputs


def build_head(feature_shape: Sequence[int], head_cfg, num_classes: int) -> keras.Sequential:
    """Pooling -> [Dense(units, relu)] -> Dropout -> output; sigmoid for 2 classes, softmax otherwise."""
    layers: list[keras.layers.Layer] = [keras.Input(tuple(feature_shape))]
    layers.append(keras.layers.GlobalAveragePooling2D() if head_cfg.pooling == "avg" else keras.layers.Flatten())
    if head_cfg.units:
        layers.append(keras.layers.Dense(head_cfg.units, activation="relu"))
    if head_cfg.dropout:
        layers.append(keras.layers.Dropout(head_cfg.dropout))
    layers.append(output_layer(num_classes))
    return keras.Sequential(layers, name="head")


def compile_for(model: keras.Model, optimizer: str, lr: float, num_classes: int) -> None:
    """A fresh optimizer at `lr`, the right loss for binary or multi-class, accuracy logged as `acc`."""
    opt = keras.optimizers.RMSprop(lr) if optimizer == "rmsprop" else keras.optimizers.Adam(lr)
    loss, metric = loss_and_metric(num_classes)
    model.compile(optimizer=opt, loss=loss, metrics=[metric], steps_per_execution=STEPS_PER_EXECUTION)


def loss_and_metric(num_classes: int) -> tuple[keras.losses.Loss, keras.metrics.Metric]:
    """Binary cross-entropy and accuracy on a sigmoid for 2 classes, their sparse categorical forms otherwise."""
    if num_classes == 2:
        return keras.losses.BinaryCrossentropy(), keras.metrics.BinaryAccuracy(name="acc")
    return keras.losses.SparseCategoricalCrossentropy(), keras.metrics.SparseCategoricalAccuracy(name="acc")


def score_metrics(scores: np.ndarray, y: np.ndarray, num_classes: int) -> tuple[float, float]:
    """(loss, accuracy) of a model's outputs `scores` against labels `y`, as `evaluate` computes them.

    `evaluate` averages per-batch means weighted by batch size, which is the mean over all images: the loss
    agrees with it to float32 rounding (about 1e-7), the accuracy exactly (tested).
    """
    loss, metric = loss_and_metric(num_classes)
    target = targets(y, num_classes)
    metric.update_state(target, scores)
    return float(loss(target, scores)), float(metric.result())


def targets(y: np.ndarray, num_classes: int) -> np.ndarray:
    """Labels shaped for the loss: (N, 1) float for a sigmoid output, int class ids otherwise."""
    return y.reshape(-1, 1).astype("float32") if num_classes == 2 else y


def dataset(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle_seed: int | None = None):
    """tf.data over arrays (memory-mapped cache files, say), read batch by batch, cast to float32 on the fly;
    seeded shuffling for training.

    The positions are shuffled, not the arrays: `range(n)` through the same seeded `shuffle` gives the order that
    `from_tensor_slices((x, y)).shuffle(n, seed)` gives its elements (the shuffle never looks at them; tested), and
    each batch is gathered from `x` as it is needed. No copy of `x` becomes a TensorFlow constant, and the
    memory used is a few batches, whatever the number of images.
    """
    import tensorflow as tf

    n = len(x)
    order = tf.data.Dataset.range(n)
    if shuffle_seed is not None:
        order = order.shuffle(n, seed=shuffle_seed, reshuffle_each_iteration=True)

    def gather(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(positions) and positions[-1] - positions[0] == len(positions) - 1:  # in order: a slice
            chosen = slice(int(positions[0]), int(positions[-1]) + 1)
            return np.asarray(x[chosen]), np.asarray(y[chosen])
        return np.asarray(x[positions]), np.asarray(y[positions])

    def read(positions):
        xb, yb = tf.numpy_function(gather, [positions], (tf.as_dtype(x.dtype), tf.as_dtype(y.dtype)), stateful=False)
        xb.set_shape((None, *x.shape[1:]))
        yb.set_shape((None, *y.shape[1:]))
        return tf.cast(xb, tf.float32), yb

    ds = order.batch(batch_size).map(read, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def frozen_stage(
    backbone: str | None, image_size: int, lower: keras.Model | None, pool: bool = False, resize_to: int | None = None
) -> keras.Model:
    """Images -> [resizing] -> preprocessing -> the frozen layers (inference mode) [-> global average pooling].

    Its output can be cached. With `pool`, the stage ends with the head's own pooling, which has no
    weights: the cached features are then 25x smaller (MobileNetV2: 1280 numbers instead of 5x5x1280)
    and every head epoch is that much cheaper, with the same arithmetic. `resize_to` (scratch at a lower
    resolution) resizes the decoded images in the graph, antialiased as the decoder does. `backbone` None:
    pixels scaled to [0, 1], as Chollet's small convnet is fed (`Rescaling(1/255)`), instead of a backbone's
    own preprocessing.
    """
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = inputs
    if resize_to is not None and resize_to != image_size:
        x = keras.layers.Resizing(resize_to, resize_to, antialias=True, name="resize")(keras.ops.cast(x, "float32"))
    if backbone is None:
        x = keras.layers.Rescaling(1 / 255, name="rescale")(x)
    else:
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


def small_convnet(image_size: int, dropout: float, num_classes: int) -> tuple[keras.Model, keras.Sequential]:
    """Chollet's small convnet (Deep Learning with Python, 5.2), as (trunk, classifier): four blocks of a 3x3
    Conv2D (32, 64, 128, 128 filters, relu) and a 2x2 MaxPooling2D, then Flatten -> [Dropout(dropout), the
    book's second model] -> Dense(512, relu) -> output. Fed pixels scaled to [0, 1] (`frozen_stage` with no
    backbone)."""
    layers: list[keras.layers.Layer] = [keras.Input((image_size, image_size, 3))]
    for filters in (32, 64, 128, 128):
        layers += [keras.layers.Conv2D(filters, 3, activation="relu"), keras.layers.MaxPooling2D(2)]
    trunk = keras.Sequential(layers, name="small_convnet")
    features = trunk.compute_output_shape((None, image_size, image_size, 3))[1:]
    classifier: list[keras.layers.Layer] = [keras.Input(features), keras.layers.Flatten()]
    if dropout:
        classifier.append(keras.layers.Dropout(dropout))
    classifier += [keras.layers.Dense(512, activation="relu"), output_layer(num_classes)]
    return trunk, keras.Sequential(classifier, name="classifier")


def output_layer(num_classes: int) -> keras.layers.Dense:
    """Sigmoid for 2 classes, softmax otherwise; float32 under mixed precision, so that the loss and the
    probabilities stay numerically sound."""
    binary = num_classes == 2
    return keras.layers.Dense(
        1 if binary else num_classes, activation="sigmoid" if binary else "softmax", dtype="float32"
    )


def classifier(stage: keras.Model, trunk: keras.Model, head: keras.Model) -> keras.Model:
    """Image -> stage -> trunk -> head as one model: scratch's deployable classifier (what log_model saves)."""
    return keras.Model(stage.input, head(trunk(stage.output)), name=f"{trunk.name}_classifier")


def full_model(backbone: str, image_size: int, base: keras.Model, head: keras.Model, training=False) -> keras.Model:
    """Image -> preprocess -> backbone -> head: the deployable classifier (what log_model saves)."""
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = BackbonePreprocess(backbone, name="preprocess")(inputs)
    return keras.Model(inputs, head(base(x, training=training)), name=f"{backbone}_classifier")


def count_trainable(model: keras.Model) -> int:
    """Number of trainable weight tensors (Chollet's `len(model.trainable_weights)` check)."""
    return len(model.trainable_weights)


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
