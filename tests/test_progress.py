"""The per-epoch console line's estimate of the time left."""

from __future__ import annotations

from harness.training import progress


def test_the_time_left_follows_the_epochs_after_the_first():
    assert progress.eta([5.0], 3) == ", about 15s left"  # one epoch so far: all there is to go by
    assert progress.eta([30.0, 2.0, 2.0], 40) == ", about 1m20s left"  # the first epoch traced the graph
    assert progress.eta([1.0], 0) == ""
