"""The compiled graph path gives what Keras' predict and evaluate give, so cached features, test accuracies and
job identities do not change with it."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from harness.training import backbones, forward, models

SIZE = 48


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def predicted(model: keras.Model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """What the harness computed before the graph path: `predict` over the tf.data pipeline, batches of 64."""
    return model.predict(models.dataset(x, np.zeros(len(x), np.int32), batch_size), verbose=0).astype("float32")


@pytest.mark.parametrize("name", ["mobilenetv2", "vgg16"])
@pytest.mark.parametrize("pool", [False, True])
def test_frozen_stage_features_equal_predicts(name, pool):
    keras.utils.set_random_seed(0)
    stage = models.frozen_stage(name, SIZE, backbones.build(name, None, SIZE), pool=pool)
    x = images(150)  # two full batches and a short one
    expected = predicted(stage, x)
    np.testing.assert_array_equal(forward.forward(stage, x), expected)
    for batch_size in (32, 128):  # the batch size is a speed setting, not a numerical one
        np.testing.assert_allclose(forward.forward(stage, x, batch_size), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("name", "source", "cut"), [("mobilenetv2", "block_13_expand", "block_15_expand")])
def test_segment_between_cached_cuts_equals_predicts(name, source, cut):
    keras.utils.set_random_seed(0)
    base = backbones.build(name, None, SIZE)
    lower, _ = backbones.split_at(base, source)
    cached = forward.forward(models.frozen_stage(name, SIZE, lower), images(70))
    seg = backbones.segment(base, source, cut)
    np.testing.assert_array_equal(forward.forward(seg, cached), predicted(seg, cached))


def test_one_trace_per_model_and_dtype_whatever_the_number_of_images():
    keras.utils.set_random_seed(0)
    stage = models.frozen_stage("mobilenetv2", SIZE, backbones.build("mobilenetv2", None, SIZE), pool=True)
    for n in (70, 5, 64, 1):
        assert forward.forward(stage, images(n)).shape == (n, 1280)
    assert forward.graph_call(stage, np.dtype("uint8")).experimental_get_tracing_count() == 1
    by_split = forward.forward_by_split(stage, {"train": images(3), "test": images(4, seed=1)})
    assert {s: len(v) for s, v in by_split.items()} == {"train": 3, "test": 4}
    np.testing.assert_array_equal(by_split["test"], forward.forward(stage, images(4, seed=1)))


@pytest.mark.parametrize("num_classes", [2, 3])
def test_test_metrics_from_one_pass_equal_evaluates(num_classes):
    """The trainer scores the test images in one pass and computes loss and accuracy from the scores; evaluate
    averages per-batch means, so the loss agrees to float32 rounding and the accuracy exactly."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(333, 16)).astype("float32")
    y = rng.integers(0, num_classes, 333)
    inputs = keras.Input((16,))
    model = keras.Model(inputs, models.output_layer(num_classes)(keras.layers.Dense(8, activation="relu")(inputs)))
    models.compile_for(model, "rmsprop", 1e-3, num_classes)
    expected_loss, expected_acc = model.evaluate(models.dataset(x, models.targets(y, num_classes), 32), verbose=0)
    loss, acc = models.score_metrics(forward.forward(model, x), y, num_classes)
    assert acc == pytest.approx(expected_acc, abs=0) and 0.2 < acc < 0.8
    assert loss == pytest.approx(expected_loss, rel=1e-6)
