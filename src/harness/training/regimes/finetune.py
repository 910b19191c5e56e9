"""finetune (LP-FT: Chollet 5.3, the TensorFlow tutorial): from the trained frozen model, `unfreeze_at` and every
layer above it unfrozen, recompiled with a fresh optimizer at the low `lr`, trained on with the head; BatchNorm
stays in inference mode. Epoch numbers continue after those of the head phase."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.training import backbones
from harness.training.regime import Context, OwnPhase, Recipe, RegimeSpec, Workload
from harness.training.regimes import frozen, scratch

if TYPE_CHECKING:
    import keras

    from harness.training.trainer import Phase, RegimeResult

NAME = "finetune"


def cuts(recipe: Recipe) -> tuple[str, ...]:
    return (recipe.unfreeze_at,)


def parts(recipe: Recipe, state: frozen.State) -> tuple[keras.Model, keras.Model]:
    """Cut the trained frozen model at `unfreeze_at`: (frozen stage below, trainable upper backbone)."""
    from harness.training.models import frozen_stage

    lower, upper = backbones.split_at(state.base, recipe.unfreeze_at)
    stage = frozen_stage(recipe.backbone, recipe.image_size, lower)
    backbones.set_trainable(upper, True)
    return stage, upper


def phase(ctx: Context, spec_name: str, epochs: int, lr: float) -> tuple[Phase, frozen.State]:
    """The fine-tuning phase from the frozen regime's trained state (restored as the head phase left it): upper
    backbone and head at `lr`, BatchNorm in inference mode, epochs numbered after the head phase's."""
    from harness.training.trainer import Normalisation, Phase

    state = ctx.start.restored()
    stage, upper = parts(ctx.recipe, state)
    recipe = ctx.recipe
    tuned = Phase(spec_name, recipe.unfreeze_at, stage, state.head, lr, epochs, trainable=upper,
                  normalisation=Normalisation.inference, first_epoch=state.next_epoch)  # fmt: skip
    return tuned, state


def train(ctx: Context) -> RegimeResult:
    """Unfreeze `unfreeze_at` and above, recompile with a fresh optimizer at `lr`, continue the epochs after
    those the head phase ran (all of them, unless the stopping rule ended it early)."""
    from harness.training.models import full_model

    recipe = ctx.recipe
    budget = recipe.budget(SPEC, len(ctx.arrays.y["train"]))
    tuned, state = phase(ctx, NAME, budget.epochs, recipe.lr)
    result = ctx.trainer.run(ctx.arrays, tuned)
    result.budget = budget
    if recipe.log_model:
        result.model = full_model(recipe.backbone, recipe.image_size, state.base, state.head)
    return result


def cost(w: Workload) -> float:
    """Training above the cut (3 forwards on the training split, one on validation) every epoch; with
    augmentation the frozen part below the cut also runs over the training split every epoch."""
    below = w.epochs * w.n_train * w.per_image_gflop * w.below_cut if w.recipe.augment else 0.0
    above = w.epochs * (3 * w.n_train + w.n_val) * w.per_image_gflop * (1 - w.below_cut)
    return below / w.forward_gflops + above / w.train_gflops


SPEC = RegimeSpec(
    name=NAME,
    label="fine-tuned",
    color="tab:orange",
    lr_key="lr",
    phases=("finetune",),
    own_phase=OwnPhase("finetune", 10),
    pretrained=True,
    unfreezes=True,
    train=train,
    cost=cost,
    cuts=cuts,
    starts_from=frozen.NAME,
    compared_with=(frozen.NAME, scratch.NAME),
)
