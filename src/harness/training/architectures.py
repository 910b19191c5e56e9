"""The backbones the harness knows, as data: one `BackboneSpec` per keras.applications architecture.

The data are read from Keras by `harness.training.catalog` and shipped as `architectures.json`, so that a config
is checked against them (a known name, a boundary of it, an accepted size) before TensorFlow is imported. Kept
apart from the code that builds and cuts the backbones (`harness.training.backbones`), which cache keys hash: a
feature's key names the architecture it used, so adding one here leaves every other backbone's keys as they were.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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
    after: tuple[str, ...] = ()  # boundaries named by the layer below the cut (its output is the cut)
    blocks: dict[str, str] = field(default_factory=dict)  # block -> its first boundary: the listed choices
    default_boundary: str = ""
    default_image_size: int = 224
    preprocessing_in_model: bool = False  # rescales inside the model; its preprocess_input passes pixels through
    normalization: tuple[str, ...] = ()  # the normalisation layer classes it has
    cost_below: dict[str, float] = field(default_factory=dict)  # boundary -> share of the forward below it
    weights_file: str | None = None  # what Keras downloads for weights='imagenet' (include_top=False)
    weights_url: str | None = None


def _spec(entry: dict[str, Any]) -> BackboneSpec:
    return BackboneSpec(
        **{
            **entry,
            "boundaries": tuple(entry["boundaries"]),
            "after": tuple(entry["after"]),
            "normalization": tuple(entry["normalization"]),
        }
    )


BACKBONES: dict[str, BackboneSpec] = {
    name: _spec(entry) for name, entry in json.loads(Path(__file__).with_name("architectures.json").read_text()).items()
}
