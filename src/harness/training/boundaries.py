"""Where a backbone can be cut, read from its graph rather than typed by hand.

A boundary is a layer whose input is the only tensor crossing a cut just before it: every layer above it
depends on the layers below only through that tensor, so the backbone splits there into a lower model (images to
that tensor) and an upper one (that tensor to the output), as `harness.training.backbones.split_at` builds them.
This module finds them all for any Keras functional model, so that an architecture needs no hand-written list;
the hand lists of VGG16 and MobileNetV2 are among them (`tests/test_boundaries.py`).
"""

from __future__ import annotations

from typing import Any


def _inputs(layer: Any) -> list[Any]:
    tensors = layer.input
    return list(tensors) if isinstance(tensors, list | tuple) else [tensors]


def valid_boundaries(model: Any) -> tuple[str, ...]:
    """Every layer of `model` (a Keras functional model) at whose single input the model can be cut, in network
    order. The first layer after the input is one (its input is the images)."""
    layers = list(model.operations)  # layers and the plain operations between them (ConvNeXt's residual adds)
    named = {id(layer) for layer in model.layers}  # a cut is named by a layer: `get_layer` finds only those
    position = {id(layer): i for i, layer in enumerate(layers)}
    last_use = list(range(len(layers)))  # the last position that reads each layer's output (itself when none)
    producers: list[list[int]] = []
    for i, layer in enumerate(layers):
        found = []
        for tensor in _inputs(layer) if i else []:
            j = position[id(tensor._keras_history.operation)]
            last_use[j] = max(last_use[j], i)
            found.append(j)
        producers.append(found)
    out = []
    best: list[tuple[int, int]] = []  # (last use, position) of the two outputs below i read furthest up
    for i, layer in enumerate(layers):
        if i and len(producers[i]) == 1:
            j = producers[i][0]
            crossing = [use for use, k in best if k != j]
            reach = crossing[0] if crossing else -1
            if reach < i and id(layer) in named:
                out.append(layer.name)
        best = sorted([*best, (last_use[i], i)], reverse=True)[:2]
    return tuple(out)
