"""Inference passes (frozen stage, segments between cached cuts, test scores) as one compiled graph call per batch.

Keras' `predict` wraps every call in its data adapter, callbacks and step function, and feeds it through
tf.data. For a model that only runs forward, a `tf.function` over `model(batch, training=False)` does the same
arithmetic on the same batches, so its outputs equal `predict`'s bit for bit (tested), at the speed of a bare
graph call (keras-team/keras#18062 reports `predict`'s overhead). On this CPU `predict`'s pass over the 4,000
shared photographs (MobileNetV2, 160 px) took either about 11 s, as this path does, or 21 s: its tf.data feed
(`_batches` says why this path has none); benchmarks/RESULTS.md has the side-by-side tables
(`benchmarks/bench_frozen_stage.py`, `benchmarks/bench_forward_feed.py`).

The graph function is traced once per model and input dtype (its batch dimension is left open, so the last
short batch does not retrace) and kept as long as the model lives. XLA is not used: on this CPU
`jit_compile=True` ran the same pass 11x slower than the plain graph, with outputs 3.7e-4 away from
`predict`'s, which would change cached features.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np

# Images per graph call. Outputs do not depend on it (tested at 32 and 128 against `predict` at 64). Measured with
# benchmarks/bench_frozen_stage.py (RESULTS.md, 2026-12-05): 239 images/s at 32, 236 at 64, 195 at 128 on the
# project's 2-core machine; 32 and 64 are within the rounds' spread, and 64 keeps `predict`'s own batches.
FORWARD_BATCH = 64

_graphs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {dtype: tf.function}


def graph_call(model: keras.Model, dtype: np.dtype):
    """The compiled `model(batch, training=False)` for batches of `dtype`, cast to float32 in the graph."""
    import tensorflow as tf

    by_dtype = _graphs.setdefault(model, {})
    key = np.dtype(dtype).name
    if key not in by_dtype:
        spec = tf.TensorSpec((None, *model.input.shape[1:]), tf.as_dtype(key))
        by_dtype[key] = tf.function(
            lambda batch: model(tf.cast(batch, tf.float32), training=False), input_signature=[spec], jit_compile=False
        )
    return by_dtype[key]


def _batches(x: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """`x` in consecutive batches, each copied out of `x` (a memory-mapped cache file's pages read) by a thread
    while the graph runs the one before.

    Not tf.data: fed through `Dataset.from_generator(...).prefetch(2)`, the pass over the 4,000 shared photographs
    in a fresh process just after their decoding took 20.5 s instead of about 11 s in 4 of 10 processes, and
    never in 10 with this loop (RESULTS.md, 2026-12-07); no copy of the whole array is made either way."""
    with ThreadPoolExecutor(1, thread_name_prefix="harness-read-ahead") as reader:
        reads = (reader.submit(np.array, x[start : start + batch_size]) for start in range(0, len(x), batch_size))
        pending = next(reads, None)
        while pending is not None:
            following = next(reads, None)  # submitted before this batch is handed over: read while the graph runs
            yield pending.result()
            pending = following


def forward(
    model: keras.Model, x: np.ndarray, batch_size: int = FORWARD_BATCH, out: np.ndarray | None = None
) -> np.ndarray:
    """`model` over `x` in inference mode, as float32, written batch by batch into `out` (a cache file's
    `NpyWriter`, say), or a new array."""
    call = graph_call(model, x.dtype)
    if out is None:
        out = np.empty(output_shape(model, len(x)), np.float32)
    start = 0
    for batch in _batches(x, batch_size):
        y = call(batch).numpy()
        out[start : start + len(y)] = y
        start += len(y)
    return out


def output_shape(model: keras.Model, n: int) -> tuple[int, ...]:
    """The shape of `model`'s outputs for `n` inputs."""
    return (n, *model.output.shape[1:])


def forward_by_split(
    model: keras.Model, xs: dict[str, np.ndarray], allocate: Callable | None = None
) -> dict[str, np.ndarray]:
    """`model` over every split's inputs, split by split through the same traced graph, each into the array
    `allocate(split, shape, dtype)` gives (`cache.Allocate`), or a new one."""
    return {
        split: forward(
            model, x, out=None if allocate is None else allocate(split, output_shape(model, len(x)), np.float32)
        )
        for split, x in xs.items()
    }
