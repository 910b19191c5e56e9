"""What a regime is to the harness: the spec its module declares (behaviour as well as metadata), the settings it
reads from a job's config (`Recipe`), what it is handed to train (`Context`) and to estimate its cost (`Workload`).

A regime is one module of `harness.training.regimes` holding a `SPEC`, and one line of the registry
(`harness.training.specs`). The job trains the chosen regimes in the registry's order, the plan, the cache keys
and the report read their cuts, costs, reuse and comparisons from the specs: nothing else names a regime.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.training import stopping

if TYPE_CHECKING:
    import keras

    from harness.training.trainer import Arrays, RegimeResult, Trainer


@dataclass(frozen=True)
class Recipe:
    """What the regimes need from a job's config to build and train their models, taken from it once
    (`from_cfg`): the regimes never see the rest (store, cache, leases, sweep)."""

    seed: int
    backbone: str  # its name in harness.training.backbones
    image_size: int
    unfreeze_at: str
    head: Any  # the head node (pooling, units, dropout)
    augment: bool
    augmentation: Any  # the augmentation node, used when `augment`
    head_lr: float
    lr: float
    optimizer: str
    rule: stopping.Rule
    limits: stopping.Limits
    settings: Mapping[str, Any] = field(default_factory=dict)  # each regime's own config node, by regime name
    log_model: bool = False

    @classmethod
    def from_cfg(cls, cfg: Any) -> Recipe:
        """From a typed config (`harness.config.Config`); regimes' own nodes are the fields marked
        `regime_settings` there."""
        import dataclasses

        own = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.metadata.get("regime_settings")}
        return cls(
            seed=int(cfg.seed),
            backbone=str(cfg.backbone.name),
            image_size=int(cfg.backbone.image_size),
            unfreeze_at=str(cfg.unfreeze_at),
            head=cfg.head,
            augment=bool(cfg.augment),
            augmentation=cfg.augmentation,
            head_lr=float(cfg.head_lr),
            lr=float(cfg.lr),
            optimizer=str(cfg.optimizer),
            rule=stopping.Rule.from_cfg(cfg),
            limits=stopping.Limits.from_cfg(cfg),
            settings=own,
            log_model=bool(cfg.log_model),
        )

    def budget(self, spec: RegimeSpec, n_train: int) -> stopping.Budget:
        """The epochs `spec` may train on a training split of `n_train` images: its phases' budgets added."""
        return self.limits.budget(spec.phases, n_train)


@dataclass
class Context:
    """What a job hands a regime to train: the recipe, the decoded images, the trainer (with the job's cache
    behind its features), the pretrained backbone and the trained state of the regime it starts from."""

    recipe: Recipe
    arrays: Arrays
    trainer: Trainer
    # the pretrained backbone with its pristine weights, every layer trainable (None: no regime needs it)
    pretrained: Callable[[], keras.Model] | None = None
    start: Any = None  # `starts_from`'s trained state; the regime puts it back as that one left it (`restored()`)


@dataclass(frozen=True)
class Workload:
    """What the dry run's estimate of one regime needs: the job's sizes and this machine's rates."""

    recipe: Recipe
    per_image_gflop: float  # the whole backbone's forward pass over one image at the job's size
    below_cut: float  # share of the backbone's forward below unfreeze_at
    n_train: int
    n_val: int
    epochs: int  # the most epochs this regime trains (its budget)
    trains_state: bool  # builds the state it would reuse (a head phase not in the cache)
    forward_gflops: float  # inference throughput of this machine
    train_gflops: float  # training throughput (forward + backward counted as 3 forwards)


@dataclass(frozen=True)
class Reuse:
    """A regime whose trained state is stored and reused by later jobs that would train it identically (the
    head phase: jobs differing only in unfreeze_at or lr share it)."""

    kind: str  # the cache entry's kind, and the prefix of the tags that say whether it was reused
    # (recipe, n_train, classes) -> what besides its inputs and the backbone decides the state
    key_parts: Callable[[Recipe, int, Sequence[str]], dict[str, Any]]
    save: Callable[[RegimeResult, Path], None]
    restore: Callable[[Context, Path], RegimeResult]


@dataclass(frozen=True)
class OwnPhase:
    """A phase a regime introduces: its key under `epochs` and `steps_budget`, and the default epochs."""

    key: str
    epochs: int


def _no_cuts(recipe: Recipe) -> tuple[str, ...]:
    return ()


@dataclass(frozen=True)
class RegimeSpec:
    """One regime: how it trains, what it consumes and produces, which feature cuts it needs, what it costs, what
    the report compares it with, and how it is shown."""

    name: str  # as written in `regimes=[...]`, run names and tags
    label: str  # in tables and figures
    color: str  # in figures (matplotlib's tab palette)
    lr_key: str  # the config key of the learning rate it trains at
    phases: tuple[str, ...]  # the `epochs` / `steps_budget` keys it trains for, added (FT: head + finetune)
    pretrained: bool  # needs the backbone's pretrained weights
    train: Callable[[Context], RegimeResult]
    cost: Callable[[Workload], float]  # estimated seconds on this machine, given its workload
    cuts: Callable[[Recipe], tuple[str, ...]] = _no_cuts  # the frozen-stage cuts whose features it trains on
    # float32 values per image of the preprocessed pixels it trains on: never cached, held in $TMPDIR for the job
    temporary_values: Callable[[Recipe], int] | None = None
    own_phase: OwnPhase | None = None  # the phase it introduces, if any
    unfreezes: bool = False  # trains the backbone's layers from `unfreeze_at` up (the boundary is its setting)
    starts_from: str | None = None  # the regime whose trained state it continues, in the same job
    compared_with: tuple[str, ...] = ()  # baselines the report tests it against (this − baseline)
    settings: type | None = None  # its own config node, named after it (`scratch.model`, `l2sp.alpha`)
    columns: Mapping[str, str] = field(default_factory=dict)  # report column -> key of its node it shows
    # (the report's constant keys, the regimes that ran) -> keys these settings made meaningless, not captioned
    unused_keys: Callable[[Mapping[str, str], Sequence[str]], set[str]] | None = None
    reuse: Reuse | None = None  # its trained state is a cache entry that later jobs reuse


def regime_settings(node: type) -> Any:
    """A config field holding a regime's own node (the schema adds one per spec with `settings`)."""
    return field(default_factory=node, metadata={"regime_settings": True})


def added_at_default(default: Any) -> Any:
    """A settings field added after studies were recorded: left out of job identities while it holds `default`,
    the value every earlier job implicitly had, so those jobs keep their identities."""
    return field(default=default, metadata={"added_at_default": True})
