"""The backbones a study can use, their preprocessing, and where each may be cut for fine-tuning.

A backbone is cut at a *boundary* layer: everything below it is the frozen part (whose output can be
computed once and cached), the boundary and everything above it is trained. Boundaries are the layers
where such a cut leaves no skip connection crossing it (VGG16's conv layers, MobileNetV2's block inputs), read
from each architecture's graph by `harness.training.catalog`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from harness.errors import HarnessError
from harness.training.architectures import BACKBONES, BackboneSpec

__all__ = ["BACKBONES", "BackboneSpec"]  # the registry, as data (harness.training.architectures)


def get_spec(name: str) -> BackboneSpec:
    """The spec of a backbone by config name, or a HarnessError listing the known names."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise HarnessError(f"backbone={name!r} is not known; choose one of {sorted(BACKBONES)}") from None


def check_boundary(name: str, layer: str) -> None:
    """Raise unless `layer` is a valid `unfreeze_at` of backbone `name`, listing each block's first boundary."""
    spec = get_spec(name)
    if layer not in spec.boundaries:
        owners = [b for b, s in BACKBONES.items() if layer in s.boundaries]
        hint = f" ({layer!r} is a {owners[0]} layer)" if owners else ""
        starts = list(spec.blocks.values()) or list(spec.boundaries)
        others = len(spec.boundaries) - len(starts)
        inside = f" (and {others} more inside the blocks: harness.training.backbones.BACKBONES)" if others > 0 else ""
        raise HarnessError(
            f"unfreeze_at={layer!r} is not a layer of backbone {name}{hint}. "
            f"Valid {name} boundaries, bottom to top, each block's first: {', '.join(starts)}{inside}; "
            f"default {spec.default_boundary}"
        )


def boundary_index(name: str, layer: str) -> int:
    """Position of a boundary in network order (for sorting report rows and figure axes)."""
    return get_spec(name).boundaries.index(layer)


def check_weights(weights: str | None) -> None:
    """`imagenet`, null, or an existing file; anything else is an error before the model is built."""
    if weights is None or weights == "imagenet":
        return
    if not Path(str(weights)).expanduser().is_file():
        raise HarnessError(
            f"backbone.weights={weights!r}: no such file. Use 'imagenet' (Keras download), "
            "a path to a weights file, or null (random init)."
        )


def preprocess_fn(name: str) -> Callable:
    """The backbone's own keras.applications preprocess_input."""
    import keras

    return getattr(keras.applications, get_spec(name).module).preprocess_input


def build(name: str, weights: str | None, image_size: int):
    """The convolutional base (include_top=False), with ImageNet, file or random weights."""
    import keras

    spec = get_spec(name)
    check_weights(weights)
    resolved = str(Path(weights).expanduser()) if weights not in (None, "imagenet") else weights
    constructor = getattr(keras.applications, spec.application)
    try:
        model = constructor(include_top=False, weights=resolved, input_shape=(image_size, image_size, 3))
    except (ValueError, OSError) as exc:
        if resolved in (None, "imagenet"):
            raise
        raise HarnessError(
            f"backbone.weights={weights!r} does not fit backbone {name} (include_top=False): {exc}"
        ) from exc
    if (name, image_size) not in _SHAPES:
        _SHAPES[(name, image_size)] = _cut_shapes(name, model)
    return model


# The cuts that are not a layer of the architecture: the decoded images themselves (a network trained whole),
# the backbone's output, and that output average-pooled (what a GAP head sees). Every other cut is a boundary
# layer's name, since each architecture names its own.
PIXELS = "pixels"
TOP = "top"
POOLED = "pooled"
TOP_CUTS = (TOP, POOLED)


def head_cut(pooling: str, augment: bool) -> str:
    """Where the features a new head trains on end: pooled when the head pools by average and inputs are fixed
    (the pooling has no weights, so pooled features give the same arithmetic 25x smaller), else the top."""
    return POOLED if pooling == "avg" and not augment else TOP


@functools.lru_cache(maxsize=4)
def _built(name: str, weights: str, image_size: int, policy: str) -> tuple:
    model = build(name, weights, image_size)
    return model, model.get_weights()


def build_once(name: str, weights: str, image_size: int) -> tuple:
    """(model, its pristine weights), built on the first call per process and dtype policy; later calls return
    the same pair untouched (a sweep's pre-check needs the build, not a reset)."""
    import keras

    return _built(name, weights, image_size, keras.mixed_precision.global_policy().name)


def pretrained(name: str, weights: str | None, image_size: int):
    """`build`, but a weights file or ImageNet backbone is built once per process and reset on every later call.

    Consecutive jobs of a sweep share (backbone, weights, size); building MobileNetV2 and reading its
    weights file took about a second per job. Each call restores the pristine weights (BatchNorm
    statistics included) and the all-trainable state of a fresh build, so a job never sees what an
    earlier one trained. Random init (weights=None) follows the seed and is built fresh.
    """
    if weights is None:
        return build(name, None, image_size)
    model, pristine = build_once(name, str(weights), image_size)
    model.set_weights(pristine)
    set_trainable(model, True)
    return model


def cut_tensor(base, layer: str):
    """The tensor at which a boundary cuts a built backbone: the layer's input, or, for a layer of several inputs
    (a concatenation, which has no cut at its input: InceptionV3's `mixed8`), its output."""
    boundary = base.get_layer(layer)
    return boundary.output if isinstance(boundary.input, list) else boundary.input


# (backbone, image size) -> cut -> one image's feature shape, recorded by every build: the disk check reads the
# shapes of the backbone the job has built (weights do not change them) instead of building one more (a second).
_SHAPES: dict[tuple[str, int], dict[str, tuple[int, ...]]] = {}


def _cut_shapes(name: str, model) -> dict[str, tuple[int, ...]]:
    out = {b: tuple(cut_tensor(model, b).shape[1:]) for b in get_spec(name).boundaries}
    out[TOP] = tuple(model.output.shape[1:])
    out[POOLED] = out[TOP][-1:]
    return out


def cut_shape(name: str, image_size: int, cut: str) -> tuple[int, ...]:
    """The shape of one image's features at a cut (a boundary, `top` or `pooled`): from any build of the backbone
    at that size in this process, else from an unweighted one."""
    if (name, image_size) not in _SHAPES:
        build(name, None, image_size)
    return _SHAPES[(name, image_size)][cut]


def split_at(base, layer: str):
    """Cut a built backbone at `layer`: (lower, upper) functional models sharing the base's weights.

    `lower` maps images to the boundary's input and is None when the cut is at the first layer.
    """
    import keras

    tensor = cut_tensor(base, layer)
    if tensor is base.input:
        return None, base
    lower = keras.Model(base.input, tensor, name=f"{base.name}_below_{layer}")
    upper = keras.Model(tensor, base.output, name=f"{base.name}_from_{layer}")
    return lower, upper


def segment(base, start: str, end: str | None):
    """The layers from boundary `start` up to boundary `end` (None: the backbone's output), as a model.

    Features at a deeper cut are this segment applied to features at a shallower one, which lets a sweep
    over boundaries run the frozen trunk once instead of once per boundary.
    """
    import keras

    outputs = base.output if end is None else cut_tensor(base, end)
    return keras.Model(cut_tensor(base, start), outputs, name=f"{base.name}_{start}_to_{end or 'top'}")


def set_trainable(model, trainable: bool) -> None:
    """Set `trainable` on the model and on every one of its layers.

    A functional model cut at an intermediate tensor (see `split_at`) does not pass its own
    `trainable` flag down to its layers in Keras 3, so each layer is set explicitly.
    """
    model.trainable = trainable
    for layer in model.layers:
        layer.trainable = trainable
