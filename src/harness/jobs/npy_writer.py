"""An array being written to its `.npy` file batch by batch, with plain `write` calls, then read back mapped.

Builders (decoding, every forward pass) fill their output in slices, `out[start:stop] = batch`, so the output
need not be an array: a file written in order serves. Filling a freshly created memory map instead costs a page
fault per 4 KB page; measured here, 3,000 features of 154 KB each (MobileNetV2's block_3_expand cut at 160 px)
took 0.70 s through a fresh map and 0.10 s through `write`, and inside the frozen stage the map added 3.4 s to a
7.0 s pass (`benchmarks/bench_scale.py`, RESULTS.md).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np


class NpyWriter:
    """`shape` elements of `dtype`, written row slices at a time into the open file `fh` (the header first), then
    flushed to disk (`close`) or mapped read-only (`mapped`). Only whole-row slices can be assigned."""

    def __init__(self, fh: Any, shape: tuple[int, ...], dtype: Any):
        self.fh, self.shape, self.dtype = fh, tuple(shape), np.dtype(dtype)
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape}
        np.lib.format.write_array_header_1_0(fh, header)
        self.offset = fh.tell()
        self.row_bytes = self.dtype.itemsize * int(np.prod(self.shape[1:], dtype=np.int64))
        fh.truncate(self.offset + self.row_bytes * self.shape[0])  # the full size now: a sparse file until written

    @classmethod
    def create(cls, path: str | os.PathLike, shape: tuple[int, ...], dtype: Any) -> NpyWriter:
        """A writer of a new file at `path` (the writer closes it)."""
        return cls(open(path, "w+b"), shape, dtype)  # noqa: SIM115 - the writer owns the file and closes it

    def __len__(self) -> int:
        return self.shape[0]

    def __setitem__(self, index: slice, value: Any) -> None:
        if not isinstance(index, slice) or index.step not in (None, 1):
            raise TypeError(f"an NpyWriter takes row slices (out[a:b] = rows), not {index!r}")
        start, stop, _ = index.indices(self.shape[0])
        target = (stop - start, *self.shape[1:])
        try:  # as an array would take them: the rows themselves, or a value broadcast over them
            rows = np.ascontiguousarray(np.broadcast_to(np.asarray(value, dtype=self.dtype), target))
        except ValueError:
            raise ValueError(f"{np.shape(value)} does not fit out[{start}:{stop}] of an array {self.shape}") from None
        self.fh.seek(self.offset + start * self.row_bytes)
        self.fh.write(rows.data)

    def flush(self) -> None:
        """Hand the rows written so far to the kernel (as a memory map's `flush`)."""
        self.fh.flush()

    def close(self) -> None:
        """Flush the written rows to disk (before the file is renamed into place)."""
        self.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()

    def mapped(self) -> np.ndarray:
        """The written array, mapped read-only from the file (which may already be unlinked), the file closed."""
        self.flush()
        array = np.memmap(self.fh, dtype=self.dtype, mode="r", offset=self.offset, shape=self.shape)
        self.fh.close()  # the mapping keeps its own reference to the file
        return array
