"""Boundaries read from the graph: every hand-listed boundary is one, and each really cuts the model in two."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from harness.training import backbones, boundaries
from harness.training.architectures import BACKBONES

# The boundaries the harness listed by hand before they were read from the graph: jobs recorded with them keep
# their meaning (the same layer, the same cut) and so their identities.
HAND_LISTS = {
    "vgg16": tuple(f"block{b}_conv{i}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for i in range(1, n + 1)),
    "mobilenetv2": ("Conv1", "expanded_conv_depthwise", *(f"block_{i}_expand" for i in range(1, 17)), "Conv_1"),
}


def build(application: str) -> keras.Model:
    return getattr(keras.applications, application)(include_top=False, weights=None, input_shape=(32, 32, 3))


@pytest.mark.parametrize("name", sorted(HAND_LISTS))
def test_the_hand_listed_boundaries_are_found_in_the_graph_in_the_same_order(name):
    found = boundaries.valid_boundaries(build(BACKBONES[name].application))
    assert [b for b in found if b in HAND_LISTS[name]] == list(HAND_LISTS[name])


@pytest.mark.parametrize("name", sorted(HAND_LISTS))
def test_the_registry_lists_every_hand_listed_boundary_with_the_same_meaning(name):
    """Listed (each a block's first), in the same order, and each the input of the same layer (no `after` cut)."""
    spec = BACKBONES[name]
    assert [b for b in spec.blocks.values() if b in HAND_LISTS[name]] == list(HAND_LISTS[name])
    assert not set(HAND_LISTS[name]) & set(spec.after)
    assert spec.default_boundary == {"vgg16": "block5_conv1", "mobilenetv2": "block_11_expand"}[name]


@pytest.mark.slow  # one pair of models per boundary: about a minute
@pytest.mark.parametrize("application", ["VGG16", "MobileNetV2", "ConvNeXtTiny"])
def test_every_found_boundary_cuts_the_model_into_two_that_compose_to_it(application):
    """ConvNeXt's residual additions are plain operations, not layers: the graph is read through them."""
    model = build(application)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    whole = model(x, training=False)
    found = boundaries.valid_boundaries(model)
    assert len(found) > 10
    for name in found[1:]:
        lower, upper = backbones.split_at(model, name)
        np.testing.assert_allclose(upper(lower(x, training=False), training=False), whole, atol=1e-5, err_msg=name)


def test_a_layer_inside_a_residual_block_is_not_a_boundary():
    found = boundaries.valid_boundaries(build("MobileNetV2"))
    assert "block_2_expand" in found and "block_2_project" not in found and "block_2_add" not in found
    assert "block_1_project" in found  # block 1 has no residual: its layers are a chain
    convnext = boundaries.valid_boundaries(build("ConvNeXtTiny"))
    assert {"convnext_tiny_downsampling_block_0", "convnext_tiny_stage_1_block_0_depthwise_conv"} <= set(convnext)
    assert "convnext_tiny_stage_1_block_0_layernorm" not in convnext  # the block's input still waits for its add
