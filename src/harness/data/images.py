"""Decoding: every chosen file read and resized once, in parallel, into a uint8 array (tf.data), batch by batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.errors import HarnessError


def _decoder(image_size: int):
    import tensorflow as tf

    def decode(path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        image = tf.image.resize(image, (image_size, image_size), method="bilinear", antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)

    return decode


def load_images(files: tuple[Path, ...], image_size: int, out: np.ndarray | None = None) -> np.ndarray:
    """Decode and resize every file once, in parallel, into a uint8 array (N, size, size, 3): `out` (a cache
    file's `NpyWriter`, written batch by batch as they are decoded), or a new array.

    A file can pass `image_problem` (its first and last bytes look right) and still be corrupt inside;
    then every such file is named in a HarnessError rather than failing somewhere inside tf.data.
    """
    if out is None:
        out = np.empty((len(files), image_size, image_size, 3), np.uint8)
    if not files:
        return out
    import tensorflow as tf

    decode = _decoder(image_size)
    ds = tf.data.Dataset.from_tensor_slices([str(f) for f in files])
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(256).prefetch(1)
    try:
        start = 0
        for batch in ds:
            out[start : start + len(batch)] = batch.numpy()
            start += len(batch)
    except tf.errors.InvalidArgumentError:
        broken = []
        for f in files:
            try:
                decode(tf.constant(str(f)))
            except tf.errors.InvalidArgumentError:
                broken.append(f)
        listing = "\n".join(f"  {f}" for f in broken)
        raise HarnessError(
            f"{len(broken)} file(s) look like images but cannot be decoded (corrupt inside):\n{listing}\n"
            "Remove or replace them."
        ) from None
    return out
