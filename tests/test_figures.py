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
    (raw_acc, smooth_acc), (raw_loss, smooth_loss) = fig.axes[0:2], fig.axes[2:4]
    drawn = {  # (panel, line label) -> y values
        (ax.get_title(), line.get_label()): list(line.get_ydata())
        for ax in fig.axes
        for line in ax.lines
        if not line.get_label().startswith("start")
    }
    for metric, raw, smooth in (("acc", raw_acc, smooth_acc), ("loss", raw_loss, smooth_loss)):
        assert raw.get_title() == f"{metric} (raw)" and smooth.get_title() == f"{metric} (EMA 0.8)"
        for label, key in (("train", metric), ("validation", f"val_{metric}")):
            assert drawn[(raw.get_title(), label)] == pytest.approx(history[key])  # the raw panel: the values
            assert drawn[(smooth.get_title(), label)] == pytest.approx(figures.ema(history[key]))  # smoothed
        assert list(raw.lines[0].get_xdata()) == [1, 2, 3]  # epochs counted from 1
        # the TensorFlow tutorial's marker between the head phase (epoch 1) and fine-tuning (epoch 2)
        assert [line.get_xdata()[0] for line in raw.lines if line.get_label() == "start fine-tuning"] == [1.5]
    figures.close(fig)
