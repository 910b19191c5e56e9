"""The in-graph augmentation is ImageDataGenerator's transform (one composed affine map, one resampling)."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from scipy import ndimage

from harness.training.augmentation import RandomAffine, transforms


def image_data_generator(image: np.ndarray, theta, tx, ty, shear, zx, zy, flip) -> np.ndarray:
    """keras_preprocessing's apply_affine_transform (then flip_axis), written out with scipy as it does."""
    h, w = image.shape[:2]
    rotation = np.array([[math.cos(theta), -math.sin(theta), 0], [math.sin(theta), math.cos(theta), 0], [0, 0, 1]])
    shift = np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]])
    shearing = np.array([[1, -math.sin(shear), 0], [0, math.cos(shear), 0], [0, 0, 1]])
    zoom = np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]])
    o = np.array([[1, 0, h / 2 - 0.5], [0, 1, w / 2 - 0.5], [0, 0, 1]])
    r = np.array([[1, 0, -h / 2 + 0.5], [0, 1, -w / 2 + 0.5], [0, 0, 1]])
    m = o @ rotation @ shift @ shearing @ zoom @ r
    out = np.stack(
        [ndimage.affine_transform(image[..., c], m[:2, :2], m[:2, 2], order=1, mode="nearest") for c in range(3)],
        axis=-1,
    )
    return out[:, ::-1] if flip else out


@pytest.mark.parametrize(
    "params",
    [
        (0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0),  # identity
        (math.radians(30), 0.0, 0.0, 0.0, 1.0, 1.0, 0.0),  # rotation alone
        (0.0, 5.0, -8.0, 0.0, 1.0, 1.0, 0.0),  # shift alone
        (math.radians(-25), -4.0, 6.0, math.radians(10), 0.85, 1.15, 1.0),  # all of them, flipped
    ],
)
def test_one_resampling_equals_image_data_generators_transform(params):
    rng = np.random.default_rng(0)
    # a smooth image of unequal sides, so that a swapped row and column or a wrong centre shows
    small = rng.uniform(0, 255, (6, 8, 3))
    image = ndimage.zoom(small, (40 / 6, 48 / 8, 1), order=1).astype("float32")
    expected = image_data_generator(image, *params)
    rows = transforms(*[np.array([p], "float32") for p in params], height=40, width=48)
    got = keras.ops.convert_to_numpy(keras.ops.image.affine_transform(image[None], rows, "bilinear", "nearest"))[0]
    assert np.abs(got - expected).max() < 0.5, np.abs(got - expected).max()  # of 255: rounding in the sampling


def test_random_affine_acts_only_while_training_and_is_reproducible_by_seed():
    images = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    layer = RandomAffine(40, 0.2, 0.2, 0.2, True, seed=3)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(images, training=False)), images)
    first = keras.ops.convert_to_numpy(layer(images, training=True))
    assert first.shape == images.shape and np.abs(first - images).mean() > 1.0
    again = keras.ops.convert_to_numpy(RandomAffine(40, 0.2, 0.2, 0.2, True, seed=3)(images, training=True))
    np.testing.assert_array_equal(first, again)
    # every image draws its own transform
    assert not np.allclose(first[0] - images[0], first[1] - images[1])
