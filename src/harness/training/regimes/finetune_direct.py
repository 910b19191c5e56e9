"""finetune_direct (FT, full fine-tuning from a new head): the pretrained backbone from `unfreeze_at` upward and a
new, randomly initialised head trained together from the first step at `finetune_direct.lr` (by default `lr`),
with no head phase before them; BatchNorm in inference mode, as in the fine-tuning that follows a head phase.

Kumar et al. (ICLR 2022) compare it with LP-FT (`finetune`): a random head sends large gradients into the
pretrained layers early on and distorts their features. For a fair comparison it trains for the head phase's and
the fine-tuning phase's epochs added (`epochs.head + epochs.finetune`, or their step budgets), the same number of
optimizer steps as LP-FT in all, and its `lr` is chosen on validation like any other's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from omegaconf import MISSING

from harness.training.regime import Context, RegimeSpec
from harness.training.regimes import finetune, frozen, scratch

if TYPE_CHECKING:
    from harness.training.trainer import RegimeResult

NAME = "finetune_direct"


@dataclass
class Settings:
    """Its own learning rate (the `finetune_direct` node), by default fine-tuning's: a strategy compared with LP-FT
    gets the rate chosen for it on validation, in the same job."""

    lr: float = MISSING  # conf/config.yaml: ${lr}

    def problems(self, backbone: str, min_image_size: int) -> list[str]:
        return [] if self.lr > 0 else [f"finetune_direct.lr={self.lr} must be > 0 (e.g. finetune_direct.lr=1e-4)"]


def train(ctx: Context) -> RegimeResult:
    """A new head on the pristine pretrained backbone, the layers from `unfreeze_at` up trained with it."""
    import keras

    from harness.training import backbones
    from harness.training.models import build_head, frozen_stage, full_model
    from harness.training.trainer import Normalisation, Phase

    recipe, arrays = ctx.recipe, ctx.arrays
    assert ctx.pretrained is not None
    base = ctx.pretrained()
    keras.utils.set_random_seed(recipe.seed)
    lower, upper = backbones.split_at(base, recipe.unfreeze_at)
    stage = frozen_stage(recipe.backbone, recipe.image_size, lower)
    backbones.set_trainable(upper, True)
    head = build_head(base.output.shape[1:], recipe.head, arrays.num_classes)
    budget = recipe.budget(SPEC, len(arrays.y["train"]))
    own: Settings = recipe.settings[NAME]
    phase = Phase(NAME, recipe.unfreeze_at, stage, head, own.lr, budget.epochs, trainable=upper,
                  normalisation=Normalisation.inference)  # fmt: skip
    result = ctx.trainer.run(arrays, phase)
    result.budget = budget
    if recipe.log_model:
        result.model = full_model(recipe.backbone, recipe.image_size, base, head)
    return result


SPEC = RegimeSpec(
    name=NAME,
    label="FT (new head)",
    color="tab:red",
    lr_key="finetune_direct.lr",
    phases=("head", "finetune"),
    pretrained=True,
    unfreezes=True,
    train=train,
    cost=finetune.cost,
    cuts=finetune.cuts,
    compared_with=(finetune.NAME, frozen.NAME, scratch.NAME),
    settings=Settings,
    columns={"finetune_direct_lr": "finetune_direct.lr"},
)
