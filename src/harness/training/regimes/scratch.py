"""scratch: a network with random weights, everything trained at head_lr: the backbone's own architecture (the
same-architecture control) or Chollet's small convnet (Deep Learning with Python, 5.2)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from harness.training import backbones
from harness.training.regime import Context, OwnPhase, Recipe, RegimeSpec, Workload, added_at_default

if TYPE_CHECKING:
    from harness.training.trainer import RegimeResult

log = logging.getLogger("harness.training.regimes")

NAME = "scratch"


class Model(StrEnum):
    backbone = "backbone"  # the backbone's architecture, random weights: the same-architecture control
    small_convnet = "small_convnet"  # Chollet's small convnet (Deep Learning with Python 5.2)


@dataclass
class Settings:
    """How this regime trains beyond its epochs (the `scratch` node)."""

    model: Model = added_at_default(Model.backbone)
    bn_momentum: float | None = 0.9  # BatchNorm momentum while it trains; null: the architecture's own
    image_size: int | None = None  # null: backbone.image_size
    dropout: float | None = added_at_default(None)  # small_convnet's; null: Chollet's (0.5 with augment, else 0)

    def problems(self, backbone: str, min_image_size: int) -> list[str]:
        out: list[str] = []
        if self.dropout is not None and not 0 <= self.dropout < 1:
            out.append(f"scratch.dropout={self.dropout} must be in [0, 1), or null (Chollet's choice)")
        if self.bn_momentum is not None and not 0 <= self.bn_momentum < 1:
            out.append(f"scratch.bn_momentum={self.bn_momentum} must be in [0, 1) (e.g. 0.99), or null")
        if self.image_size is not None and self.image_size < min_image_size:
            out.append(f"scratch.image_size={self.image_size} must be >= {min_image_size} for {backbone}, or null")
        return out


def settings(recipe: Recipe) -> Settings:
    return recipe.settings[NAME]


def dropout(recipe: Recipe) -> float:
    """The small convnet's dropout: `scratch.dropout`, or as in Chollet's book when unset (none in the first
    model, 0.5 in the one trained with augmentation)."""
    own = settings(recipe)
    if own.dropout is not None:
        return float(own.dropout)
    return 0.5 if recipe.augment else 0.0


def train(ctx: Context) -> RegimeResult:
    """Random init, everything trained at head_lr, on images resized in the graph to `scratch.image_size` when
    set: the backbone's own architecture (BatchNorm in training mode at `scratch.bn_momentum`, the job's head)
    or Chollet's small convnet."""
    import keras

    from harness.training.models import build_head, classifier, frozen_stage, set_bn_momentum, small_convnet
    from harness.training.trainer import Phase

    recipe, arrays, own = ctx.recipe, ctx.arrays, settings(ctx.recipe)
    keras.utils.set_random_seed(recipe.seed)  # before any layer exists: initial weights follow the seed
    name, size = recipe.backbone, recipe.image_size
    scratch_size = own.image_size or size
    if own.model == Model.small_convnet:
        base, head = small_convnet(scratch_size, dropout(recipe), arrays.num_classes)
        stage = frozen_stage(None, size, None, resize_to=scratch_size)
        log.info("%-8s Chollet's small convnet at %d px, dropout %g", NAME, scratch_size, dropout(recipe))
    else:
        base = backbones.build(name, None, scratch_size)
        changed = set_bn_momentum(base, own.bn_momentum)
        log.info("%-8s %s at %d px, BatchNorm momentum %s (%d layers)", NAME, name, scratch_size,
                 own.bn_momentum if changed else "as built", changed)  # fmt: skip
        head = build_head(base.output.shape[1:], recipe.head, arrays.num_classes)
        stage = frozen_stage(name, size, None, resize_to=scratch_size)
    budget = recipe.budget(SPEC, len(arrays.y["train"]))
    phase = Phase(NAME, backbones.PIXELS, stage, head, recipe.head_lr, budget.epochs, trainable=base)
    result = ctx.trainer.run(arrays, phase)
    result.budget = budget
    if recipe.log_model:
        result.model = classifier(stage, base, head)
    return result


# Chollet's small convnet: 1.03 GFLOP per image at 224 px (0.46 at 150 px, its convolutions), trained far closer
# to the machine's peak than a backbone's: ~30 s per epoch of 2,000 training and 1,000 validation images at 150 px
# measured here (3,220 GFLOP counted as below)
SMALL_CONVNET_GFLOP_224 = 1.03
SMALL_CONVNET_TRAIN_GFLOPS = 100.0


def temporary_values(recipe: Recipe) -> int:
    """The preprocessed pixels it trains on, at its own image size, per image."""
    size = settings(recipe).image_size or recipe.image_size
    return size * size * 3


def cost(w: Workload) -> float:
    """Every epoch trains the whole network (forward + backward, 3 forwards) on the training split and runs it
    forward over validation, at scratch's own image size."""
    own = settings(w.recipe)
    size = own.image_size or w.recipe.image_size
    if own.model == Model.small_convnet:
        per_image, rate = SMALL_CONVNET_GFLOP_224 * (size / 224) ** 2, SMALL_CONVNET_TRAIN_GFLOPS
    else:
        per_image, rate = w.per_image_gflop * (size / w.recipe.image_size) ** 2, w.train_gflops
    return w.epochs * (3 * w.n_train + w.n_val) * per_image / rate


def unused_keys(constant: Mapping[str, str], ran: Sequence[str]) -> set[str]:
    """Chollet's small convnet has no BatchNorm, and when only it ran nothing of the backbone was built (its input
    size says what it saw)."""
    if constant.get("scratch_model") != Model.small_convnet:
        return set()
    return {"scratch_bn_momentum", *(["backbone"] if list(ran) == [NAME] else [])}


SPEC = RegimeSpec(
    name=NAME,
    label="scratch",
    color="tab:gray",
    lr_key="head_lr",
    phases=("scratch",),
    own_phase=OwnPhase("scratch", 30),
    pretrained=False,
    train=train,
    cost=cost,
    temporary_values=temporary_values,
    settings=Settings,
    unused_keys=unused_keys,
    columns={
        "scratch_size": "scratch.image_size",
        "scratch_bn_momentum": "scratch.bn_momentum",
        "scratch_model": "scratch.model",
    },  # fmt: skip
)
