"""NpyWriter: row slices written with plain `write` calls make the same `.npy` file numpy would, in any order."""

from __future__ import annotations

import numpy as np
import pytest

from harness.jobs.npy_writer import NpyWriter


def test_slices_written_in_any_order_give_the_file_np_save_gives_and_map_back(tmp_path):
    rng = np.random.default_rng(0)
    expected = rng.random((10, 4, 3)).astype(np.float32)
    path = tmp_path / "a.npy"
    writer = NpyWriter.create(path, expected.shape, np.float32)
    for start in (8, 0, 4):  # out of order, the last slice short
        writer[start : start + 4] = expected[start : start + 4]
    writer[2:4] = expected[2:4]
    writer.close()
    np.save(tmp_path / "b.npy", expected)
    assert path.read_bytes() == (tmp_path / "b.npy").read_bytes()

    spilled = NpyWriter.create(tmp_path / "c.npy", (3, 2), np.uint8)
    spilled[:] = 7  # a value broadcast over the rows, as an array takes it
    (tmp_path / "c.npy").unlink()
    mapped = spilled.mapped()
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable and mapped.tolist() == [[7, 7]] * 3


def test_anything_but_whole_row_slices_of_the_right_shape_is_refused_by_name(tmp_path):
    writer = NpyWriter.create(tmp_path / "a.npy", (4, 2), np.float32)
    with pytest.raises(TypeError, match="row slices"):
        writer[1] = np.zeros(2)
    with pytest.raises(ValueError, match=r"\(3, 3\) does not fit out\[0:2\] of an array \(4, 2\)"):
        writer[0:2] = np.zeros((3, 3))
    writer.close()
