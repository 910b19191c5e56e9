"""How long each phase trains, by one rule for every regime: its epoch budget and when validation stops it.

A comparison of regimes is only fair when each is stopped the same way. Two settings decide it:

- `steps_budget.<phase>`: optimizer steps instead of epochs, turned into
  `ceil(steps / ceil(n_train / batch_size))` epochs for the job's (subsampled) training split, so a job on
  10% of the data gets as many updates as one on 100% rather than a tenth of them;
- `early_stopping`: stop a phase once `monitor` has not improved by more than `min_delta` for `patience`
  epochs, and put back the weights of the best epoch, on which test accuracy is then measured.

The epochs keys stay the maximum when no budget is set. Disabled, the rule still tracks the best epoch
(by `monitor`) for the record, but neither stops nor restores: the last epoch's weights are evaluated.

Resume: a job killed mid-phase is re-run from the phase's start (head phases are cached only once whole).
Training is deterministic (op determinism, seeded shuffles), so the re-run sees the same validation
curve and makes the same stopping decision. A head phase reused from the cache carries its recorded
outcome (best epoch, reason) and its stored weights, which are the restored best weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, is_dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.config import Config


@dataclass(frozen=True)
class Budget:
    """The epochs a phase may run and where that number comes from."""

    epochs: int  # the most epochs the phase runs
    steps_per_epoch: int
    source: str  # "epochs" (the epochs key) or "steps_budget"


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    """Optimizer steps in one epoch: the last, short batch counts as a step."""
    return max(1, math.ceil(n_train / batch_size))


@dataclass(frozen=True)
class Limits:
    """How long each phase may train (the `epochs` and `steps_budget` nodes, and the batch size that turns
    steps into epochs), read from the config once."""

    epochs: dict[str, int]  # by phase (the keys of the `epochs` node)
    steps: dict[str, int | None]  # by phase; None: the epochs key decides
    batch_size: int

    @classmethod
    def from_cfg(cls, cfg: Config) -> Limits:
        node = cfg.epochs  # a dataclass of the schema, or the composed DictConfig
        phases = [f.name for f in fields(node)] if is_dataclass(node) else [str(k) for k in node]
        epochs = {p: int(getattr(cfg.epochs, p)) for p in phases}
        steps = {p: None if getattr(cfg.steps_budget, p) is None else int(getattr(cfg.steps_budget, p)) for p in phases}
        return cls(epochs, steps, int(cfg.batch_size))

    def budget(self, phases: Sequence[str], n_train: int) -> Budget:
        """The epochs of these phases, added, for a training split of `n_train` images: each phase's budget in
        steps rounded up to whole epochs when `steps_budget.<phase>` is set, else its `epochs.<phase>` key."""
        per_epoch = steps_per_epoch(n_train, self.batch_size)
        epochs, sources = 0, []
        for phase in phases:
            steps = self.steps[phase]
            epochs += self.epochs[phase] if steps is None else math.ceil(steps / per_epoch)
            sources.append("epochs" if steps is None else "steps_budget")
        return Budget(epochs, per_epoch, "+".join(dict.fromkeys(sources)))


@dataclass(frozen=True)
class Rule:
    """The early-stopping rule of a job (the `early_stopping` node; the defaults are the schema's alone)."""

    enabled: bool
    monitor: str
    patience: int
    min_delta: float

    @classmethod
    def from_cfg(cls, cfg: Config) -> Rule:
        node = cfg.early_stopping
        return cls(bool(node.enabled), str(node.monitor), int(node.patience), float(node.min_delta))

    @property
    def mode(self) -> str:
        return "max" if self.monitor.endswith("acc") else "min"

    def key(self) -> dict[str, Any] | None:
        """What the rule contributes to a cache key: nothing when off (every off rule trains the same)."""
        return asdict(self) if self.enabled else None


# No rule: every phase runs its epochs and the last weights are evaluated (the best epoch still recorded). What a
# Trainer built outside a job uses; a job's rule is always its config's.
OFF = Rule(enabled=False, monitor="val_loss", patience=1, min_delta=0.0)


@dataclass(frozen=True)
class Outcome:
    """How a phase ended: its best epoch by the rule's monitor, the epochs run, and why it stopped."""

    best_epoch: int  # epoch number as in the curves (MLflow step; fine-tuning continues the head's numbers)
    epochs_run: int
    stopped: str  # "early" | "max_epochs"
    restored: bool  # the best epoch's weights were put back (the rule is enabled)

    def as_record(self) -> dict[str, Any]:
        return asdict(self)


def stopper(rule: Rule) -> Any:
    """Keras' EarlyStopping with the rule's settings, counting the epochs it sees; off, it only tracks the
    best epoch. `.outcome(max_epochs)` after `fit` says how the phase ended.

    Keras restores the best weights at the end of training whether it stopped early or ran out of epochs,
    so with the rule enabled test accuracy is always measured on the best epoch's weights. Keras is
    imported here, not with the module: config checks and the plan use this module before any job runs.
    """
    import keras

    class Stopper(keras.callbacks.EarlyStopping):
        def __init__(self) -> None:
            super().__init__(
                monitor=rule.monitor,
                min_delta=rule.min_delta,
                patience=rule.patience if rule.enabled else 2**31 - 1,
                mode=rule.mode,
                restore_best_weights=rule.enabled,
            )
            self.epochs_seen = 0

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            self.epochs_seen = 0

        def on_epoch_end(self, epoch, logs=None):
            self.epochs_seen += 1
            super().on_epoch_end(epoch, logs)

        def outcome(self, max_epochs: int) -> Outcome:
            """ "early" only when the rule ended the phase before `max_epochs`."""
            stopped = "early" if self.epochs_seen < max_epochs else "max_epochs"
            return Outcome(int(self.best_epoch), self.epochs_seen, stopped, rule.enabled)

    return Stopper()
