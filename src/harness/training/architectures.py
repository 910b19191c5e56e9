"""The backbones the harness knows, as data: one `BackboneSpec` per keras.applications architecture.

Kept apart from the code that builds and cuts them (`harness.training.backbones`), which cache keys hash: a
feature's key names the architecture it used, so adding one here leaves every other backbone's keys as they were.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackboneSpec:
    """What the harness needs to know about one keras.applications architecture."""

    name: str
    application: str  # attribute of keras.applications
    module: str  # keras.applications submodule holding preprocess_input
    boundaries: tuple[str, ...]  # valid `unfreeze_at` values, in network order
    min_image_size: int
    gflop_224: float  # forward cost of one image at 224 px in GFLOP (2 x multiply-adds): the dry run's estimate
    # measured faster in bf16 than fp32 on a CPU with native bf16 (2-core x86, AVX512-BF16): precision=auto uses it
    bf16_faster_on_cpu: bool = False


_VGG16_CONVS = tuple(
    f"block{block}_conv{i}" for block, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)) for i in range(1, n + 1)
)
_MOBILENETV2_BLOCKS = (
    "Conv1",
    "expanded_conv_depthwise",
    *(f"block_{i}_expand" for i in range(1, 17)),
    "Conv_1",
)

BACKBONES: dict[str, BackboneSpec] = {
    # VGG16 at 150 px: 12 -> 29 images/s in bf16 (2.4x)
    "vgg16": BackboneSpec("vgg16", "VGG16", "vgg16", _VGG16_CONVS, 32, 30.7, bf16_faster_on_cpu=True),
    # MobileNetV2 at 160 px: 121 -> 100 images/s in bf16 (slower: depthwise convolutions and the casts around them)
    "mobilenetv2": BackboneSpec("mobilenetv2", "MobileNetV2", "mobilenet_v2", _MOBILENETV2_BLOCKS, 32, 0.6),
}
