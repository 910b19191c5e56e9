"""Backbone boundaries and cuts, checked against the real Keras architectures."""

from __future__ import annotations

import numpy as np
import pytest

from harness.errors import HarnessError
from harness.training import backbones


@pytest.mark.parametrize("name", ["mobilenetv2", "vgg16"])  # every architecture: tests/test_catalog.py
def test_boundaries_are_real_layers_in_network_order(name):
    base = backbones.build(name, None, 64)
    order = [layer.name for layer in base.layers]
    positions = [order.index(b) for b in backbones.get_spec(name).boundaries]
    assert positions == sorted(positions)


@pytest.mark.parametrize(("name", "layer"), [("vgg16", "block4_conv1"), ("mobilenetv2", "block_13_expand")])
def test_cut_model_computes_the_same_function(name, layer):
    base = backbones.build(name, None, 64)
    lower, upper = backbones.split_at(base, layer)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(upper(lower(x)), base(x), rtol=1e-5, atol=1e-5)
    assert lower.layers[-1].name != layer and upper.get_layer(layer) is base.get_layer(layer)


def test_cut_at_the_first_layer_has_no_lower_part():
    base = backbones.build("vgg16", None, 32)
    lower, upper = backbones.split_at(base, "block1_conv1")
    assert lower is None and upper is base


def test_unknown_boundary_lists_the_valid_ones():
    with pytest.raises(HarnessError) as info:
        backbones.check_boundary("vgg16", "fc1")
    message = str(info.value)
    assert "unfreeze_at='fc1' is not a layer of backbone vgg16" in message
    assert "block1_conv1, block1_conv2" in message and "block5_conv3" in message and "default block5_conv1" in message


def test_a_long_list_of_boundaries_names_each_blocks_first_and_counts_the_rest():
    with pytest.raises(HarnessError) as info:
        backbones.check_boundary("resnet50", "block5_conv1")
    message = str(info.value)
    assert "('block5_conv1' is a vgg16 layer)" in message
    assert "conv4_block6_1_conv, conv5_block1_1_conv" in message and "conv4_block6_out" not in message
    assert f"and {len(backbones.get_spec('resnet50').boundaries) - 18} more inside the blocks" in message


def test_real_mobilenet_weights_load_and_differ_from_random(mobilenet_weights):
    pretrained = backbones.build("mobilenetv2", str(mobilenet_weights), 96)
    random = backbones.build("mobilenetv2", None, 96)
    kernel = pretrained.get_layer("Conv1").get_weights()[0]
    assert not np.allclose(kernel, random.get_layer("Conv1").get_weights()[0])


def test_weights_that_do_not_fit_are_named(mobilenet_weights):
    with pytest.raises(HarnessError, match="does not fit backbone vgg16"):
        backbones.build("vgg16", str(mobilenet_weights), 64)


def test_a_reused_pretrained_backbone_comes_back_pristine(mobilenet_weights):
    fresh = backbones.build("mobilenetv2", str(mobilenet_weights), 64)
    first = backbones.pretrained("mobilenetv2", str(mobilenet_weights), 64)
    for v in first.weights:  # what a job's training could leave behind: changed weights, BN statistics, flags
        v.assign(v.numpy() + 1.0)
    backbones.set_trainable(first, False)
    again = backbones.pretrained("mobilenetv2", str(mobilenet_weights), 64)
    assert again is first  # built once per process
    for got, want in zip(again.get_weights(), fresh.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    assert again.trainable and all(layer.trainable for layer in again.layers)
    assert len(again.trainable_weights) == len(fresh.trainable_weights)
