"""Every keras.applications architecture, read from Keras: where it can be cut, how its cuts are grouped into blocks,
its default boundary, input sizes, preprocessing, normalisation, forward cost and ImageNet weights file.

What Keras can say is read from it here, once, and written to `architectures.json` (the registry's data, read by
`harness.training.architectures` without importing TensorFlow, so a bad value is refused before the import) and
to one `conf/backbone/<name>.yaml` per architecture. Regenerate both after a Keras upgrade, or to add an
architecture Keras added (one line in `ARCHITECTURES`, a family line if it is a new family):

    python -m harness.training.catalog

`tests/test_catalog.py` rebuilds every architecture in the slow tier and fails when the shipped data differ.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.training.boundaries import valid_boundaries

DATA = Path(__file__).with_name("architectures.json")
COST_SIZE = 224  # the forward cost is counted at this size (the dry run scales it by the job's size squared)


@dataclass(frozen=True)
class Family:
    """How one keras.applications module names its layers: the regex whose first match in a layer's name is its
    block (the listed cuts are each block's first), and the one whose match is its stage (the default boundary
    starts the last stage). Without a stage pattern the default is the block holding the last downsampling."""

    module: str  # keras.applications submodule holding preprocess_input
    block: str
    stage: str | None = None


FAMILIES = {
    "vgg": Family("vgg16", r"block\d+_conv\d+", r"block\d+"),  # every conv its own block: Chollet's cuts
    "resnet": Family("resnet", r"conv\d+_block\d+|conv1|pool1|post", r"conv\d+"),
    "resnet_v2": Family("resnet_v2", r"conv\d+_block\d+|conv1|pool1|post", r"conv\d+"),
    "densenet": Family("densenet", r"conv\d+_block\d+|pool\d+|conv1", r"conv\d+"),
    "efficientnet": Family("efficientnet", r"block\d+[a-z]|stem|top", r"block\d+"),
    "efficientnet_v2": Family("efficientnet_v2", r"block\d+[a-z]|stem|top", r"block\d+"),
    "convnext": Family("convnext", r"stage_\d+_block_\d+|downsampling_block_\d+|stem", r"stage_\d+"),
    "mobilenet": Family("mobilenet", r"conv_(?:dw|pw|pad)_(\d+)|conv1"),
    "mobilenet_v2": Family("mobilenet_v2", r"block_\d+|expanded_conv|Conv_1|Conv1"),
    "mobilenet_v3": Family("mobilenet_v3", r"expanded_conv(?:_\d+)?|^conv_1|^conv"),
    "inception_v3": Family("inception_v3", r"mixed\d+|conv2d_\d+"),
    "inception_resnet_v2": Family("inception_resnet_v2", r"block\d+_\d+|mixed_\w+|conv_7b"),
    "xception": Family("xception", r"block\d+"),
    "nasnet": Family("nasnet", r"stem"),
}

# (config name, keras.applications attribute, family, default boundary when the family's rule is not the one
# to use, measured faster in bf16 than fp32 on a CPU with native bf16: precision=auto uses it)
ARCHITECTURES: tuple[tuple[str, str, str, str | None, bool], ...] = (
    ("vgg16", "VGG16", "vgg", None, True),  # 150 px: 12 -> 29 images/s in bf16 (2.4x)
    ("vgg19", "VGG19", "vgg", None, False),
    ("resnet50", "ResNet50", "resnet", None, False),
    ("resnet101", "ResNet101", "resnet", None, False),
    ("resnet152", "ResNet152", "resnet", None, False),
    ("resnet50v2", "ResNet50V2", "resnet_v2", None, False),
    ("resnet101v2", "ResNet101V2", "resnet_v2", None, False),
    ("resnet152v2", "ResNet152V2", "resnet_v2", None, False),
    ("densenet121", "DenseNet121", "densenet", None, False),
    ("densenet169", "DenseNet169", "densenet", None, False),
    ("densenet201", "DenseNet201", "densenet", None, False),
    *((f"efficientnetb{i}", f"EfficientNetB{i}", "efficientnet", None, False) for i in range(8)),
    *(
        (f"efficientnetv2{s.lower()}", f"EfficientNetV2{s}", "efficientnet_v2", None, False)
        for s in ("B0", "B1", "B2", "B3", "S", "M", "L")
    ),
    *(
        (f"convnext_{s.lower()}", f"ConvNeXt{s}", "convnext", None, False)
        for s in ("Tiny", "Small", "Base", "Large", "XLarge")
    ),
    ("mobilenet", "MobileNet", "mobilenet", None, False),
    # 160 px: 121 -> 100 images/s in bf16 (slower: depthwise convolutions and the casts around them). The
    # TensorFlow tutorial unfreezes from layer 100 (block_11_expand_relu): block 11
    ("mobilenetv2", "MobileNetV2", "mobilenet_v2", "block_11_expand", False),
    ("mobilenetv3small", "MobileNetV3Small", "mobilenet_v3", None, False),
    ("mobilenetv3large", "MobileNetV3Large", "mobilenet_v3", None, False),
    ("inceptionv3", "InceptionV3", "inception_v3", "mixed8", False),  # the 8x8 stage: mixed9 and mixed10
    ("inceptionresnetv2", "InceptionResNetV2", "inception_resnet_v2", "mixed_7a", False),  # the block8 stage
    ("xception", "Xception", "xception", None, False),
    ("nasnetmobile", "NASNetMobile", "nasnet", None, False),
    ("nasnetlarge", "NASNetLarge", "nasnet", None, False),
)


def _snake(name: str) -> str:
    """Keras' automatic layer name for a class (`Conv2D` -> `conv2d`), as keras.src.utils.naming writes it."""
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)).lower()


def is_numbered(layer: Any) -> bool:
    """Whether a layer carries Keras' automatic name (`conv2d_12`), which depends on what the process built before:
    such a name cannot identify a cut across jobs."""
    return re.fullmatch(rf"{re.escape(_snake(type(layer).__name__))}(_\d+)?", layer.name) is not None


def named_cuts(model: Any) -> tuple[list[str], list[str]]:
    """The cuts a config may name, in network order, and those of them named by the layer *below* the cut.

    A boundary whose layer has an automatic name is named by the layer producing its input instead, where that is
    a layer of several inputs, which has no cut at its input (InceptionV3's `mixed8`: the cut above that
    concatenation); one with neither name is left out."""
    names: list[str] = []
    after: list[str] = []
    for name in valid_boundaries(model):
        layer = model.get_layer(name)
        if not is_numbered(layer):
            names.append(name)
            continue
        producer = layer.input._keras_history.operation  # named for its output only where its input is no cut
        if producer in model.layers and isinstance(producer.input, list) and not is_numbered(producer):
            names.append(producer.name)
            after.append(producer.name)
    return names, after


def blocks(names: list[str], pattern: str) -> dict[str, str]:
    """Block -> its first cut, in network order; cuts matching no block belong to none (not listed)."""
    out: dict[str, str] = {}
    for name in names:
        found = re.search(pattern, name)
        if found:
            out.setdefault(_block_key(found), name)
    return out


def _flops(layer: Any) -> float:
    """Multiply-adds x 2 of one layer over one image (convolutions and dense layers; the rest is negligible)."""
    import keras
    import numpy as np

    out_shape = layer.output.shape[1:]
    in_shape = layer.input.shape[1:] if not isinstance(layer.input, list) else None
    if in_shape is None:
        return 0.0
    if isinstance(layer, keras.layers.SeparableConv2D):
        kh, kw = layer.kernel_size
        depth = in_shape[-1] * layer.depth_multiplier
        return 2.0 * np.prod(out_shape[:-1]) * (depth * kh * kw + depth * out_shape[-1])
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return 2.0 * np.prod(out_shape) * kh * kw
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw = layer.kernel_size
        return 2.0 * np.prod(out_shape) * kh * kw * in_shape[-1] / layer.groups
    if isinstance(layer, keras.layers.Dense):
        return 2.0 * np.prod(in_shape) * out_shape[-1]
    return 0.0


def cost_below(model: Any, names: list[str], after: list[str]) -> tuple[float, dict[str, float]]:
    """The forward cost of one image in GFLOP, and each cut's share of it below the cut."""
    position = {id(op): i for i, op in enumerate(model.operations)}
    flops = [_flops(op) if hasattr(op, "kernel_size") or hasattr(op, "units") else 0.0 for op in model.operations]
    total = float(sum(flops))
    shares = {}
    for name in names:
        layer = model.get_layer(name)
        end = position[id(layer)] + (1 if name in after else 0)
        shares[name] = round(sum(flops[:end]) / total, 4) if total else 0.0
    return total / 1e9, shares


def _block_key(found: re.Match) -> str:
    return found.group(1) if found.groups() and found.group(1) else found.group(0)


def _last_downsampling_block(model: Any, block: str) -> str | None:
    """The block of the last layer that shrinks the image (a stride, not a squeeze-and-excitation's pooling to
    1 x 1)."""
    for op in reversed(model.operations):
        if op not in model.layers or isinstance(op.input, list) or len(op.input.shape) != 4:
            continue
        shrinks = op.output.shape[1] is not None and 1 < op.output.shape[1] < op.input.shape[1]
        found = re.search(block, op.name) if shrinks else None
        if found:
            return _block_key(found)
    return None


def default_boundary(model: Any, listed: dict[str, str], family: Family, override: str | None) -> str:
    """The start of the last stage (or the block holding the last downsampling), unless the registry names one;
    `listed` is `blocks` of the model's cuts."""
    if override:
        return override
    if family.stage:
        stages = [re.search(family.stage, start) for start in listed.values()]
        last = [m.group(0) for m in stages if m][-1]
        return next(start for start, m in zip(listed.values(), stages, strict=True) if m and m.group(0) == last)
    key = _last_downsampling_block(model, family.block)
    return listed[key] if key in listed else list(listed.values())[-1]


@contextmanager
def _reading_keras() -> Iterator[dict[str, Any]]:
    """While building with weights='imagenet': record the sizes Keras checks the input against and the weights file
    it would fetch, load nothing (the model keeps its random weights)."""
    import keras
    from keras.src.applications import imagenet_utils
    from keras.src.utils import file_utils

    seen: dict[str, Any] = {}
    originals = (imagenet_utils.obtain_input_shape, file_utils.get_file, keras.Model.load_weights)

    def obtain_input_shape(*args: Any, **kwargs: Any) -> Any:
        seen.setdefault("default_size", kwargs.get("default_size"))
        seen.setdefault("min_size", kwargs.get("min_size"))
        return originals[0](*args, **kwargs)

    def get_file(fname: str | None = None, origin: str | None = None, **kwargs: Any) -> str:
        seen["weights_file"] = fname or str(origin).rsplit("/", 1)[-1]
        seen["weights_url"] = origin
        seen["weights_subdir"] = kwargs.get("cache_subdir", "datasets")
        return "/nonexistent"

    imagenet_utils.obtain_input_shape = obtain_input_shape
    file_utils.get_file = get_file
    keras.Model.load_weights = lambda self, *a, **k: None
    try:
        yield seen
    finally:
        imagenet_utils.obtain_input_shape, file_utils.get_file, keras.Model.load_weights = originals


def read(name: str) -> dict[str, Any]:
    """One architecture's registry entry, read from Keras (random weights; nothing is downloaded)."""
    import keras
    import numpy as np

    _, application, family_name, override, bf16 = next(a for a in ARCHITECTURES if a[0] == name)
    family = FAMILIES[family_name]
    keras.backend.clear_session()
    with _reading_keras() as seen:
        model = getattr(keras.applications, application)(
            include_top=False, weights="imagenet", input_shape=(COST_SIZE, COST_SIZE, 3)
        )
    names, after = named_cuts(model)
    listed = blocks(names, family.block)
    gflop, shares = cost_below(model, names, after)
    preprocess = getattr(keras.applications, family.module).preprocess_input
    probe = np.linspace(0, 255, 2 * 4 * 4 * 3, dtype="float32").reshape(2, 4, 4, 3)
    kinds = {type(layer).__name__ for layer in model.layers}
    return {
        "name": name,
        "application": application,
        "module": family.module,
        "boundaries": names,
        "after": after,
        "blocks": listed,
        "default_boundary": default_boundary(model, listed, family, override),
        "default_image_size": int(seen.get("default_size") or COST_SIZE),
        "min_image_size": int(seen.get("min_size") or 32),
        "preprocessing_in_model": bool(np.array_equal(np.asarray(preprocess(probe.copy())), probe)),
        "normalization": sorted(k for k in kinds if k in ("BatchNormalization", "LayerNormalization")),
        "gflop_224": round(gflop, 3),
        "cost_below": shares,
        "weights_file": seen.get("weights_file"),
        "weights_url": seen.get("weights_url"),
        "bf16_faster_on_cpu": bf16,
    }


# the two backbones of the method's sources keep their sources' image sizes (Keras' default is 224 for both)
SOURCES = {"vgg16": ("Chollet's book, 5.3", 150), "mobilenetv2": ("the TensorFlow transfer-learning tutorial", 160)}


def yaml_text(entry: dict[str, Any]) -> str:
    """The architecture's config group option (`backbone=<name>`)."""
    source, size = SOURCES.get(entry["name"], ("", entry["default_image_size"]))
    return (
        f"# {entry['application']} from keras.applications{', as in ' + source if source else ''}. Generated by\n"
        "# `python -m harness.training.catalog`: image_size is Keras' default (or the source's), unfreeze_at the\n"
        "# start of the last stage.\n"
        f"name: {entry['name']}\n"
        "weights: imagenet           # imagenet (Keras download + cache) | /path/to/weights.h5 | null (random init)\n"
        f"image_size: {size}\n"
        f"unfreeze_at: {entry['default_boundary']}\n"
    )


def main() -> None:
    """Regenerate architectures.json and conf/backbone/*.yaml from the installed Keras."""
    from harness.paths import conf_dir
    from harness.training.runtime import quiet_tensorflow

    quiet_tensorflow()
    entries = {}
    for name, *_ in ARCHITECTURES:
        entries[name] = read(name)
        print(f"{name}: {len(entries[name]['boundaries'])} cuts, {len(entries[name]['blocks'])} blocks", flush=True)
    DATA.write_text(json.dumps(entries, indent=1) + "\n")
    for name, entry in entries.items():
        (Path(conf_dir()) / "backbone" / f"{name}.yaml").write_text(yaml_text(entry))


if __name__ == "__main__":
    main()
