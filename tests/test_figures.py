"""Training-curve figures: Chollet's smoothing and the figure a regime run logs."""

from __future__ import annotations

import pytest

from harness.training import figures


def test_ema_is_chollets_smooth_curve():
    points = [0.5, 0.7, 0.6, 0.9, 0.8]
    expected = [points[0]]
    for p in points[1:]:
        expected.append(expected[-1] * 0.8 + p * 0.2)  # smooth_curve in Deep Learning with Python, 5.3
    assert figures.ema(points) == pytest.approx(expected)
    assert figures.ema([]) == []


def test_training_curves_draw_raw_and_smoothed_accuracy_and_loss():
    history = {
        "acc": [0.5, 0.6, 0.7],
        "val_acc": [0.5, 0.55, 0.65],
        "loss": [0.7, 0.6, 0.5],
        "val_loss": [0.7, 0.65, 0.6],
    }
    fig = figures.training_curves(history, first_epoch=0, title="vgg16 frozen", marker_epoch=1)
    assert len(fig.axes) == 4
    assert all(len(ax.lines) >= 2 for ax in fig.axes)  # train and validation on each
    figures.close(fig)
