"""frozen (feature extraction, linear probing): the pretrained backbone frozen whole, a new head trained at head_lr
on its cached output. Its trained head phase is a cache entry, so jobs that differ only in what comes after it
(unfreeze_at, lr) share it, and it is the state the fine-tuning regimes start from."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.training import backbones, stopping
from harness.training.regime import Context, OwnPhase, Recipe, RegimeSpec, Reuse, Workload

if TYPE_CHECKING:
    import keras
    import numpy as np

    from harness.training.trainer import RegimeResult

NAME = "frozen"


@dataclass
class State:
    """The trained frozen model that fine-tuning starts from, and the epoch number it continues at. Every regime
    that starts from it gets it as it was when the head phase ended (`restored`): one that ran before may have
    trained the backbone's upper layers in place."""

    base: keras.Model
    head: keras.Model
    next_epoch: int
    values: list[np.ndarray] | None = None  # base weights, then head variables, when the head phase ended

    def __post_init__(self) -> None:
        if self.values is None:
            self.values = [v.numpy() for v in (*self.base.weights, *self.head.variables)]

    def restored(self) -> State:
        assert self.values is not None
        for variable, value in zip((*self.base.weights, *self.head.variables), self.values, strict=True):
            variable.assign(value)
        backbones.set_trainable(self.base, True)
        return self


def cuts(recipe: Recipe) -> tuple[str, ...]:
    return (backbones.head_cut(recipe.head.pooling, recipe.augment),)


def train(ctx: Context) -> RegimeResult:
    """Feature extraction: the pretrained backbone frozen whole, a new head trained at head_lr."""
    import keras

    from harness.training.models import above_pooling, build_head, frozen_stage, full_model
    from harness.training.trainer import Phase

    recipe, arrays = ctx.recipe, ctx.arrays
    assert ctx.pretrained is not None
    base = ctx.pretrained()
    keras.utils.set_random_seed(recipe.seed)
    name, size = recipe.backbone, recipe.image_size
    (cut,) = cuts(recipe)
    stage = frozen_stage(name, size, base, pool=cut == backbones.POOLED)
    head = build_head(base.output.shape[1:], recipe.head, arrays.num_classes)
    trained = above_pooling(head) if cut == backbones.POOLED else head
    budget = recipe.budget(SPEC, len(arrays.y["train"]))
    result = ctx.trainer.run(arrays, Phase(NAME, cut, stage, trained, recipe.head_lr, budget.epochs))
    result.budget = budget
    if recipe.log_model:
        result.model = full_model(name, size, base, head)  # logged before fine-tuning changes `base`
    result.state = State(base, head, len(result.history["loss"]))
    return result


def save(result: RegimeResult, folder: Path) -> None:
    """Store a trained head phase (head variables, history, test metrics) for reuse by later jobs."""
    import numpy as np

    state = result.state
    # every variable, the dropout layer's seed-generator state included: `save_weights` leaves that out, and
    # fine-tuning from a head with a reset RNG state draws other dropout masks than the same job would
    np.savez(Path(folder) / "head_variables.npz", *[v.numpy() for v in state.head.variables])
    record = {"history": result.history, "test": result.test, "train_time_s": result.train_time_s}
    record["outcome"] = result.outcome.as_record() if result.outcome else None  # the decision, reused as made
    record["initial"] = result.initial
    record["estimates"] = result.estimates
    (Path(folder) / "result.json").write_text(json.dumps(record))
    if result.test_scores is not None:
        np.save(Path(folder) / "test_scores.npy", result.test_scores)


def restore(ctx: Context, folder: Path) -> RegimeResult:
    """The frozen regime from a stored head phase: same head weights, same recorded history and test metrics."""
    import keras
    import numpy as np

    from harness.training.models import build_head, frozen_stage, full_model
    from harness.training.trainer import RegimeResult

    recipe, arrays = ctx.recipe, ctx.arrays
    assert ctx.pretrained is not None
    base = ctx.pretrained()
    keras.utils.set_random_seed(recipe.seed)
    name, size = recipe.backbone, recipe.image_size
    frozen_stage(name, size, base)  # freezes the base exactly as training did
    head = build_head(base.output.shape[1:], recipe.head, arrays.num_classes)
    with np.load(Path(folder) / "head_variables.npz") as stored:
        for i, variable in enumerate(head.variables):
            variable.assign(stored[f"arr_{i}"])
    record = json.loads((Path(folder) / "result.json").read_text())
    result = RegimeResult(NAME, record["history"], 0, record["test"], record["train_time_s"])
    result.outcome = stopping.Outcome(**record["outcome"]) if record.get("outcome") else None
    result.initial = record["initial"]
    result.estimates = record.get("estimates")  # a head phase stored before the estimates has none
    if (Path(folder) / "test_scores.npy").is_file():
        result.test_scores = np.load(Path(folder) / "test_scores.npy")
    result.budget = recipe.budget(SPEC, len(arrays.y["train"]))
    if recipe.log_model:
        result.model = full_model(name, size, base, head)
    result.state = State(base, head, len(result.history["loss"]))
    return result


def key_parts(recipe: Recipe, n_train: int, classes: Sequence[str]) -> dict[str, Any]:
    """What decides a head phase besides its inputs and the backbone: the head and how it trains, the epochs it may
    run (from epochs.head, or the step budget on this training split) and the rule that may stop it sooner (a
    head trained under another rule is another head)."""
    return {
        "head": _plain(recipe.head),
        "head_lr": recipe.head_lr,
        "optimizer": recipe.optimizer,
        "epochs": recipe.budget(SPEC, n_train).epochs,
        "early_stopping": recipe.rule.key(),
        "batch_size": recipe.limits.batch_size,
        "seed": recipe.seed,
        "augment": _plain(recipe.augmentation) if recipe.augment else False,
        "classes": list(classes),
    }


def _plain(node: Any) -> dict[str, Any]:
    return {k: str(v) if hasattr(v, "value") else v for k, v in asdict(node).items()}


def cost(w: Workload) -> float:
    """Head epochs on cached features cost next to nothing; with augmentation the frozen trunk runs over the
    training split every epoch of a head phase that is not reused."""
    if not (w.recipe.augment and w.trains_state):
        return 0.0
    return w.epochs * w.n_train * w.per_image_gflop / w.forward_gflops


SPEC = RegimeSpec(
    name=NAME,
    label="frozen",
    color="tab:blue",
    lr_key="head_lr",
    phases=("head",),
    own_phase=OwnPhase("head", 200),
    pretrained=True,
    train=train,
    cost=cost,
    cuts=cuts,
    compared_with=("scratch",),
    reuse=Reuse("head", key_parts, save, restore),
)
