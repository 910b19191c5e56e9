"""Fitting one phase: the trainable part above a frozen stage, on cached features or on augmented images.

Without augmentation the frozen stage is a pure function of the image, so its output is computed once
and the trainable part trains on it (the expensive forward pass is not repeated every epoch). With
augmentation the whole stack runs per training batch, since every epoch sees different pixels; the
validation and test images are never augmented, so they go through the frozen stage once, as above.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import keras
import numpy as np

from harness.training import backbones, forward, stopping, transferability
from harness.training.models import InferenceMode, TrainingPenalty, compile_for, dataset, score_metrics, targets
from harness.training.progress import METRICS, ProgressLine


@dataclass
class Arrays:
    """Decoded images (uint8) and labels of each split; test may be absent."""

    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    num_classes: int

    @property
    def splits(self) -> list[str]:
        return list(self.x)

    def subset(self, splits: list[str]) -> Arrays:
        return Arrays({s: self.x[s] for s in splits}, {s: self.y[s] for s in splits}, self.num_classes)


@dataclass
class RegimeResult:
    """What one regime produced: per-epoch history, test metrics, timing and the trained model."""

    regime: str
    history: dict[str, list[float]]
    first_epoch: int
    test: dict[str, float] | None
    train_time_s: float
    model: keras.Model | None = None
    outcome: stopping.Outcome | None = None  # best epoch and why the phase stopped
    budget: stopping.Budget | None = None  # the most epochs it could run, and from which setting
    # validation before the first epoch (a phase that starts from new weights: scratch, the head), as the
    # TensorFlow tutorial evaluates its model before training: epoch 0 of the curves
    initial: dict[str, float] | None = None
    # per test image: the sigmoid's probability of the second class (2 classes), else the softmax scores
    test_scores: np.ndarray | None = None
    state: Any = None  # what a regime that starts from this one continues (the frozen regime's trained model)
    # LogME and k-NN accuracy of the training features the phase trained on (pooled), when it trained on features
    estimates: dict[str, float] | None = None


def compute_features(stage: keras.Model, arrays: Arrays, allocate: Callable | None = None) -> dict[str, np.ndarray]:
    """The frozen stage's output for every image of every split (one compiled graph, equal to `predict`'s),
    written into what `allocate` gives (`cache.Allocate`: cache files being written), or new arrays."""
    return forward.forward_by_split(stage, arrays.x, allocate)


class Normalisation(StrEnum):
    """How the normalisation layers of the trained backbone layers run while a phase trains."""

    training = "training"  # as `fit` says: BatchNorm learns its statistics (a network trained from scratch)
    inference = "inference"  # always inference mode: pretrained statistics kept (the TensorFlow tutorial's rule)


@dataclass(frozen=True)
class Phase:
    """One phase of a regime, what `Trainer.run` trains: `trainable` (if any) and `head` above `stage`, whose
    output (at `cut`) can be cached, at `lr` for at most `epochs` epochs numbered from `first_epoch`."""

    regime: str  # its runs, progress lines and callbacks are named by it
    cut: str  # where `stage` ends: backbones.PIXELS, TOP, POOLED or a boundary layer's name
    stage: keras.Model
    head: keras.Model
    lr: float
    epochs: int
    trainable: keras.Model | None = None  # backbone layers trained with the head
    normalisation: Normalisation = Normalisation.training  # of `trainable`'s normalisation layers
    first_epoch: int = 0  # > 0: continues an earlier phase's epoch numbers (and its weights)
    penalty: Callable[[], Any] | None = None  # a regulariser added to the training loss (not validation, test)


class HeldOutValidation(keras.callbacks.Callback):
    """Validation at the end of each epoch, on the frozen stage's outputs rather than on pixels.

    With augmentation the trained model starts at the pixels, and fit's own validation would run the frozen
    trunk over the validation images every epoch, though they are never augmented. Here they go through
    the stage once (cached like any features) and each epoch evaluates only the part that trains, sharing
    its weights. Listed first, so the stopping rule, the console and the history all read these numbers.
    """

    def __init__(self, on_features: keras.Model, data):
        super().__init__()
        self.on_features, self.data = on_features, data

    def on_epoch_end(self, epoch, logs=None):
        loss, acc = self.on_features.evaluate(self.data, verbose=0)
        logs["val_loss"], logs["val_acc"] = float(loss), float(acc)


@dataclass
class Trainer:
    """Fits `trainable` + `head` above a frozen stage, on cached features or on augmented images (then only the
    training split goes through the stage every epoch)."""

    num_classes: int
    batch_size: int
    seed: int
    optimizer: str
    augment: keras.Layer | None
    callbacks: Callable[[str, int], list[keras.callbacks.Callback]]
    # (stage, arrays, cut) -> features by split; the job swaps in a cached version
    features: Callable[[keras.Model, Arrays, str], dict[str, np.ndarray]] = field(
        default=lambda stage, arrays, cut: compute_features(stage, arrays)
    )
    rule: stopping.Rule = stopping.OFF  # the same stopping rule for every phase (a job passes its config's)
    # (regime, {val_loss, val_acc}) before a phase's first epoch, when it starts from new weights (first_epoch 0)
    on_initial: Callable[[str, dict[str, float]], None] | None = None

    def run(self, arrays: Arrays, phase: Phase) -> RegimeResult:
        """Train `phase` for at most its epochs (fewer when the stopping rule ends it, which then restores the best
        epoch's weights), then evaluate on test if present."""
        keras.utils.set_random_seed(self.seed)
        t0 = time.perf_counter()
        regime, stage, first_epoch, epochs = phase.regime, phase.stage, phase.first_epoch, phase.epochs

        def above(x):  # the trained part, over the frozen stage's output
            trainable = phase.trainable
            if trainable is not None:
                inference = phase.normalisation == Normalisation.inference
                x = InferenceMode(trainable, name="trainable")(x) if inference else trainable(x)
            out = phase.head(x)
            return out if phase.penalty is None else TrainingPenalty(phase.penalty, name="penalty")(out)

        features_in = keras.Input(stage.output.shape[1:], name="features")
        on_features = keras.Model(features_in, above(features_in), name=f"{regime}_on_features")
        compile_for(on_features, self.optimizer, phase.lr, self.num_classes)
        estimates = None
        if self.augment is None:
            model, inputs = on_features, self.features(stage, arrays, phase.cut)
            if phase.cut != backbones.PIXELS:  # how well these features should transfer, before training on them
                estimates = transferability.estimates(inputs["train"], arrays.y["train"])
        else:  # new pixels every epoch for training; validation and test are never augmented: staged once
            image_in = keras.Input(stage.input.shape[1:], name="image")
            model = keras.Model(image_in, above(InferenceMode(stage, name="stage")(self.augment(image_in))))
            compile_for(model, self.optimizer, phase.lr, self.num_classes)
            staged = self.features(stage, arrays.subset([s for s in arrays.x if s != "train"]), phase.cut)
            inputs = {"train": arrays.x["train"], **staged}

        def data(split: str, shuffle: bool):
            y = targets(arrays.y[split], self.num_classes)
            return dataset(inputs[split], y, self.batch_size, self.seed if shuffle else None)

        initial = None
        if first_epoch == 0:  # new weights: where the curves start, as the TensorFlow tutorial measures it
            loss, acc = on_features.evaluate(data("validation", False), verbose=0)
            initial = {"val_loss": float(loss), "val_acc": float(acc)}
            if self.on_initial is not None:
                self.on_initial(regime, initial)
        last = first_epoch + epochs
        stopper = stopping.stopper(self.rule)
        # on features the model is on_features, and fit validates it; on pixels the callback does, on features
        held_out = [] if model is on_features else [HeldOutValidation(on_features, data("validation", False))]
        fit = model.fit(
            data("train", True),
            validation_data=data("validation", False) if model is on_features else None,
            initial_epoch=first_epoch,
            epochs=last,
            verbose=0,
            shuffle=False,  # the tf.data pipeline shuffles, seeded
            callbacks=[*held_out, ProgressLine(regime, last), *self.callbacks(regime, first_epoch), stopper],
        )
        train_time = time.perf_counter() - t0
        history = {k: [float(v) for v in fit.history[k]] for k in METRICS}
        test = scores = None
        if "test" in inputs:  # one pass over the test images gives their scores, the loss and the accuracy
            scores = forward.forward(on_features, inputs["test"])
            loss, acc = score_metrics(scores, arrays.y["test"], self.num_classes)
            test = {"test_loss": loss, "test_acc": acc}
            scores = scores[:, 0] if scores.shape[1] == 1 else scores
        outcome = stopper.outcome(epochs)
        return RegimeResult(
            regime, history, first_epoch, test, train_time, outcome=outcome, initial=initial, test_scores=scores,
            estimates=estimates,
        )  # fmt: skip
