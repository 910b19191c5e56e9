"""l2sp: fine-tuning from the trained frozen model as `finetune` does, with the L2-SP penalty (Li, Grandvalet and
Davoine, "Explicit Inductive Bias for Transfer Learning with Convolutional Networks", ICML 2018) in place of weight
decay toward zero:

    alpha / 2 * ||w - w0||^2   over every pretrained weight it trains, w0 its value when fine-tuning starts
    beta / 2 * ||v||^2         over the kernels of the new head's layers (plain L2, toward zero)

Which weights count: every trainable variable of the backbone's layers from `unfreeze_at` up, kernels, biases and
BatchNorm's scale and offset alike. Decay toward zero spares scale and offset because shrinking them changes what
a layer computes; pulling them toward their pretrained values is what L2-SP asks of every pretrained parameter.
BatchNorm's moving statistics are not trained (inference mode) and are not penalised. The head starts from the
trained head phase, so its kernels take the beta term, and its biases none, as weight decay usually spares them.

It trains at its own learning rate, `l2sp.lr` (by default fine-tuning's `lr`), so that one job can train each
strategy at the rate chosen for it. The penalty is added to the training loss only: validation and test losses stay
the data loss, comparable with every other regime's (the training loss in the curves includes it). Defaults
alpha = 0.1 and beta = 0.01 are those the paper uses in most of its experiments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omegaconf import MISSING

from harness.training.regime import Context, RegimeSpec
from harness.training.regimes import finetune, frozen

if TYPE_CHECKING:
    from harness.training.trainer import RegimeResult

NAME = "l2sp"


@dataclass
class Settings:
    """The penalty's strengths (the `l2sp` node)."""

    alpha: float = 0.1  # toward the pretrained weights
    beta: float = 0.01  # toward zero, on the new head's kernels
    lr: float = MISSING  # its own learning rate; conf/config.yaml: ${lr}, fine-tuning's

    def problems(self, backbone: str, min_image_size: int) -> list[str]:
        out = [
            f"l2sp.{key}={value} must be >= 0 (the paper's range: 0.001 to 1)"
            for key, value in (("alpha", self.alpha), ("beta", self.beta))
            if not value >= 0
        ]
        return out + ([] if self.lr > 0 else [f"l2sp.lr={self.lr} must be > 0 (e.g. l2sp.lr=1e-4)"])


def penalty(pretrained: list[Any], head_kernels: list[Any], alpha: float, beta: float):
    """The L2-SP term as a function of the current weights: `pretrained` measured from their values now."""
    import keras

    ops = keras.ops
    starts = [ops.convert_to_tensor(v.numpy()) for v in pretrained]

    def term():
        to_start = sum((ops.sum(ops.square(v - s)) for v, s in zip(pretrained, starts, strict=True)), 0.0)
        to_zero = sum((ops.sum(ops.square(v)) for v in head_kernels), 0.0)
        return 0.5 * alpha * to_start + 0.5 * beta * to_zero

    return term


def train(ctx: Context) -> RegimeResult:
    """`finetune`'s phase, its training loss plus the L2-SP penalty."""
    from dataclasses import replace

    from harness.training.models import full_model

    recipe = ctx.recipe
    own: Settings = recipe.settings[NAME]
    budget = recipe.budget(SPEC, len(ctx.arrays.y["train"]))
    tuned, state = finetune.phase(ctx, NAME, budget.epochs, own.lr)
    assert tuned.trainable is not None
    kernels = [v for v in state.head.trainable_weights if v.path.endswith("kernel")]
    term = penalty(list(tuned.trainable.trainable_weights), kernels, own.alpha, own.beta)
    result = ctx.trainer.run(ctx.arrays, replace(tuned, penalty=term))
    result.budget = budget
    if recipe.log_model:
        result.model = full_model(recipe.backbone, recipe.image_size, state.base, state.head)
    return result


SPEC = RegimeSpec(
    name=NAME,
    label="L2-SP",
    color="tab:green",
    lr_key="l2sp.lr",
    phases=finetune.SPEC.phases,
    pretrained=True,
    unfreezes=True,
    train=train,
    cost=finetune.cost,
    cuts=finetune.cuts,
    starts_from=frozen.NAME,
    compared_with=(finetune.NAME, frozen.NAME),
    settings=Settings,
    columns={"l2sp_alpha": "l2sp.alpha", "l2sp_beta": "l2sp.beta", "l2sp_lr": "l2sp.lr"},
)
