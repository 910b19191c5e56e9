"""Streaming from memory-mapped files gives what the in-memory arrays gave: the same batches in the same seeded order,
the same decoded images and features, so results and job identities do not change with it."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from harness import data
from harness.jobs.cache import ArrayCache, make_key
from harness.training import backbones, forward, models


@pytest.fixture
def photos(tmp_path):
    return data.ensure_synthetic(tmp_path / "gen", {"train": 20, "validation": 3, "test": 3})


def in_memory(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle_seed: int | None):
    """The pipeline the harness trained on before streaming: the whole arrays as tf.data's tensors, shuffled."""
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).map(lambda a, b: (tf.cast(a, tf.float32), b))


def epochs(ds, n: int) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    return [[(a.numpy(), b.numpy()) for a, b in ds] for _ in range(n)]


@pytest.mark.parametrize("shuffle_seed", [None, 0, 7])
def test_streamed_batches_equal_the_in_memory_pipelines_epoch_by_epoch(tmp_path, shuffle_seed):
    """From a memory-mapped file, three epochs: every batch equal, in the same order (reshuffled each epoch)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (103, 4, 4, 3), dtype=np.uint8)
    y = rng.integers(0, 2, (103, 1)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    keras.utils.set_random_seed(1)
    expected = epochs(in_memory(x, y, 16, shuffle_seed), 3)
    keras.utils.set_random_seed(1)
    got = epochs(models.dataset(mapped, y, 16, shuffle_seed), 3)
    assert [len(e) for e in got] == [7, 7, 7]
    for epoch_expected, epoch_got in zip(expected, got, strict=True):
        for (xe, ye), (xg, yg) in zip(epoch_expected, epoch_got, strict=True):
            np.testing.assert_array_equal(xg, xe)
            np.testing.assert_array_equal(yg, ye)
    if shuffle_seed is not None:  # the epochs differ from each other, as before
        assert not np.array_equal(got[0][0][0], got[1][0][0])


def test_decoded_images_and_features_written_to_mapped_files_equal_the_in_memory_ones(tmp_path, photos):
    """Decoding into a cache file and running the frozen stage into one give the arrays the in-memory path gives."""
    files = data.scan_folder(photos).splits["train"].files
    cache = ArrayCache(tmp_path / "cache")
    decoded = cache.arrays(
        {"train": make_key("images", {"t": 1})},
        lambda _, allocate: {"train": data.load_images(files, 32, allocate("train", (len(files), 32, 32, 3), "u1"))},
    )["train"]
    assert isinstance(decoded, np.memmap)
    np.testing.assert_array_equal(decoded, data.load_images(files, 32))
    keras.utils.set_random_seed(0)
    stage = models.frozen_stage("mobilenetv2", 32, backbones.build("mobilenetv2", None, 32), pool=True)
    mapped = cache.arrays(
        {"train": make_key("features", {"t": 1})},
        lambda _, allocate: forward.forward_by_split(stage, {"train": decoded}, allocate),
    )["train"]
    assert isinstance(mapped, np.memmap) and mapped.shape == (len(files), 1280)
    np.testing.assert_array_equal(mapped, forward.forward(stage, data.load_images(files, 32)))
