"""The three training regimes of a transfer-learning study: scratch, frozen (feature extraction), finetune.

Each builds its models (`harness.models`) and trains them with the job's `Trainer` (`harness.trainer`):
scratch from random weights, frozen as a new head on the pretrained backbone, finetune from the trained
frozen model with the backbone unfrozen from `unfreeze_at` upward. A trained head phase can be stored
and restored, so fine-tuning jobs that differ only in `unfreeze_at` or `lr` share it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import keras
import numpy as np

from harness.training import backbones, stopping
from harness.training.augmentation import RandomAffine
from harness.training.models import (
    above_pooling,
    build_head,
    classifier,
    frozen_stage,
    full_model,
    set_bn_momentum,
    small_convnet,
)
from harness.training.trainer import Arrays, RegimeResult, Trainer

if TYPE_CHECKING:
    from harness.config import Config
    from harness.config.schema import Augmentation, Head, Scratch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """What the regimes need from a job's config to build and train their models, taken from it once
    (`from_cfg`): the regimes never see the rest (store, cache, leases, sweep)."""

    seed: int
    backbone: str  # its name in harness.training.backbones
    image_size: int
    unfreeze_at: str
    head: Head
    scratch: Scratch
    augment: bool
    head_lr: float
    lr: float
    limits: stopping.Limits
    log_model: bool = False

    @classmethod
    def from_cfg(cls, cfg: Config) -> Recipe:
        return cls(
            seed=int(cfg.seed),
            backbone=str(cfg.backbone.name),
            image_size=int(cfg.backbone.image_size),
            unfreeze_at=str(cfg.unfreeze_at),
            head=cfg.head,
            scratch=cfg.scratch,
            augment=bool(cfg.augment),
            head_lr=float(cfg.head_lr),
            lr=float(cfg.lr),
            limits=stopping.Limits.from_cfg(cfg),
            log_model=bool(cfg.log_model),
        )

    def budget(self, regime: str, arrays: Arrays) -> stopping.Budget:
        return self.limits.budget(regime, len(arrays.y["train"]))


def augmentation(settings: Augmentation, seed: int) -> keras.Layer:
    """Chollet's ImageDataGenerator transforms as one layer in the graph (active only while training), seeded by
    the job's seed so that the same config gives the same pixels."""
    a = settings
    return RandomAffine(
        a.rotation_degrees, a.shift, a.shear, a.zoom, a.horizontal_flip, seed=seed, fill_mode=a.fill_mode,
        name="augmentation",
    )  # fmt: skip


@dataclass
class FrozenState:
    """The trained frozen model, which fine-tuning starts from, and the epoch number fine-tuning continues at."""

    base: keras.Model
    head: keras.Model
    next_epoch: int


def scratch_dropout(recipe: Recipe) -> float:
    """The small convnet's dropout: `scratch.dropout`, or as in Chollet's book when unset (none in the first
    model, 0.5 in the one trained with augmentation)."""
    if recipe.scratch.dropout is not None:
        return float(recipe.scratch.dropout)
    return 0.5 if recipe.augment else 0.0


def train_scratch(recipe: Recipe, arrays: Arrays, trainer: Trainer) -> RegimeResult:
    """Random init, everything trained at head_lr, on images resized in the graph to `scratch.image_size` when
    set: the backbone's own architecture (`scratch.model=backbone`, BatchNorm in training mode at
    `scratch.bn_momentum`, the job's head) or Chollet's small convnet (`scratch.model=small_convnet`)."""
    keras.utils.set_random_seed(recipe.seed)  # before any layer exists: initial weights follow the seed
    name, size = recipe.backbone, recipe.image_size
    scratch_size = recipe.scratch.image_size or size
    if recipe.scratch.model == "small_convnet":
        base, head = small_convnet(scratch_size, scratch_dropout(recipe), arrays.num_classes)
        stage = frozen_stage(None, size, None, resize_to=scratch_size)
        log.info("scratch  Chollet's small convnet at %d px, dropout %g", scratch_size, scratch_dropout(recipe))
    else:
        base = backbones.build(name, None, scratch_size)
        changed = set_bn_momentum(base, recipe.scratch.bn_momentum)
        log.info("scratch  %s at %d px, BatchNorm momentum %s (%d layers)", name, scratch_size,
                 recipe.scratch.bn_momentum if changed else "as built", changed)  # fmt: skip
        head = build_head(base.output.shape[1:], recipe.head, arrays.num_classes)
        stage = frozen_stage(name, size, None, resize_to=scratch_size)
    budget = recipe.budget("scratch", arrays)
    result = trainer.run("scratch", arrays, "pixels", stage, base, None, head, recipe.head_lr, 0, budget.epochs)
    result.budget = budget
    if recipe.log_model:
        result.model = classifier(stage, base, head)
    return result


def train_frozen(
    recipe: Recipe, arrays: Arrays, trainer: Trainer, base: keras.Model
) -> tuple[RegimeResult, FrozenState]:
    """Feature extraction: the pretrained backbone frozen whole, a new head trained at head_lr."""
    keras.utils.set_random_seed(recipe.seed)
    name, size = recipe.backbone, recipe.image_size
    cut = backbones.frozen_cut(recipe.head.pooling, recipe.augment)
    stage = frozen_stage(name, size, base, pool=cut == "pooled")
    head = build_head(base.output.shape[1:], recipe.head, arrays.num_classes)
    trained = above_pooling(head) if cut == "pooled" else head
    budget = recipe.budget("frozen", arrays)
    result = trainer.run("frozen", arrays, cut, stage, None, None, trained, recipe.head_lr, 0, budget.epochs)
    result.budget = budget
    if recipe.log_model:
        result.model = full_model(name, size, base, head)  # logged before fine-tuning changes `base`
    return result, FrozenState(base, head, len(result.history["loss"]))


def save_frozen(result: RegimeResult, state: FrozenState, folder) -> None:
    """Store a trained head phase (head variables, history, test metrics) for reuse by later jobs."""
    import json
    from pathlib import Path

    # every variable, the dropout layer's seed-generator state included: `save_weights` leaves that out, and
    # fine-tuning from a head with a reset RNG state draws other dropout masks than the same job would
    np.savez(Path(folder) / "head_variables.npz", *[v.numpy() for v in state.head.variables])
    record = {"history": result.history, "test": result.test, "train_time_s": result.train_time_s}
    record["outcome"] = result.outcome.as_record() if result.outcome else None  # the decision, reused as made
    record["initial"] = result.initial
    (Path(folder) / "result.json").write_text(json.dumps(record))
    if result.test_scores is not None:
        np.save(Path(folder) / "test_scores.npy", result.test_scores)


def restore_frozen(recipe: Recipe, arrays: Arrays, base: keras.Model, folder) -> tuple[RegimeResult, FrozenState]:
    """The frozen regime from a stored head phase: same head weights, same recorded history and test metrics."""
    import json
    from pathlib import Path

    keras.utils.set_random_seed(recipe.seed)
    name, size = recipe.backbone, recipe.image_size
    frozen_stage(name, size, base)  # freezes the base exactly as training did
    head = build_head(base.output.shape[1:], recipe.head, arrays.num_classes)
    with np.load(Path(folder) / "head_variables.npz") as stored:
        for i, variable in enumerate(head.variables):
            variable.assign(stored[f"arr_{i}"])
    record = json.loads((Path(folder) / "result.json").read_text())
    result = RegimeResult("frozen", record["history"], 0, record["test"], record["train_time_s"])
    result.outcome = stopping.Outcome(**record["outcome"]) if record.get("outcome") else None
    result.initial = record["initial"]
    if (Path(folder) / "test_scores.npy").is_file():
        result.test_scores = np.load(Path(folder) / "test_scores.npy")
    result.budget = recipe.budget("frozen", arrays)
    if recipe.log_model:
        result.model = full_model(name, size, base, head)
    return result, FrozenState(base, head, len(result.history["loss"]))


def finetune_parts(recipe: Recipe, state: FrozenState) -> tuple[keras.Model, keras.Model]:
    """Cut the trained frozen model at `unfreeze_at`: (frozen stage below, trainable upper backbone)."""
    lower, upper = backbones.split_at(state.base, recipe.unfreeze_at)
    stage = frozen_stage(recipe.backbone, recipe.image_size, lower)
    backbones.set_trainable(upper, True)
    return stage, upper


def train_finetune(recipe: Recipe, arrays: Arrays, trainer: Trainer, state: FrozenState) -> RegimeResult:
    """Unfreeze `unfreeze_at` and above, recompile with a fresh optimizer at `lr`, continue the epochs after
    those the head phase ran (all of them, unless the stopping rule ended it early)."""
    stage, upper = finetune_parts(recipe, state)
    budget = recipe.budget("finetune", arrays)
    args = (recipe.unfreeze_at, stage, upper, False, state.head, recipe.lr, state.next_epoch, budget.epochs)
    result = trainer.run("finetune", arrays, *args)
    result.budget = budget
    if recipe.log_model:
        result.model = full_model(recipe.backbone, recipe.image_size, state.base, state.head)
    return result
