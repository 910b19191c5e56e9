"""The config's types, as dataclasses in Hydra's ConfigStore: a wrong type or an unknown choice fails at
compose time with Hydra's own message naming the key (`lr=abc`, `optimizer=sgdd`), before anything runs.

harness/conf/config.yaml lists `schema` first in its defaults, so every YAML file and override is merged onto these
types. Ranges and cross-field rules (a learning rate > 0, a layer of the chosen backbone) are checked after
composition, in `harness.config`. Choices are `StrEnum`s: they compare equal to their names and print as
them, so run names, MLflow params and job identities read the same strings as the YAML.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


class Regime(StrEnum):
    scratch = "scratch"
    frozen = "frozen"
    finetune = "finetune"


class Optimizer(StrEnum):
    rmsprop = "rmsprop"
    adam = "adam"


class Precision(StrEnum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"
    auto = "auto"  # resolved per job by harness.runtime.resolve_precision


class Monitor(StrEnum):
    val_loss = "val_loss"
    val_acc = "val_acc"


class Pooling(StrEnum):
    avg = "avg"
    flatten = "flatten"


class DataSource(StrEnum):
    folder = "folder"
    download = "download"
    synthetic = "synthetic"


class ScratchModel(StrEnum):
    backbone = "backbone"  # the backbone's architecture, random weights: the same-architecture control
    small_convnet = "small_convnet"  # Chollet's small convnet (Deep Learning with Python 5.2)


class FillMode(StrEnum):
    nearest = "nearest"  # ImageDataGenerator's default
    reflect = "reflect"  # Keras' RandomRotation's default (the TensorFlow tutorial)


class BadFilePolicy(StrEnum):
    skip = "skip"
    stop = "stop"


@dataclass
class Backbone:
    name: str = MISSING  # checked against harness.backbones' known names after composition
    weights: str | None = "imagenet"  # imagenet | /path/to/weights.h5 | null (random init)
    image_size: int = MISSING
    unfreeze_at: str = MISSING


@dataclass
class Data:
    source: DataSource = DataSource.folder
    path: str | None = MISSING  # data=folder: the user names it (data.path=/path/to/images)
    url: str | None = None  # source=download: the archive
    on_bad_file: BadFilePolicy = BadFilePolicy.skip
    max_pixels: int = 100_000_000  # an image over this (width x height, from its header) is a bad file
    images_per_class: dict[str, int] = field(default_factory=dict)  # source=synthetic: per split


@dataclass
class Head:
    pooling: Pooling = Pooling.avg
    units: int = 256
    dropout: float = 0.5


@dataclass
class Epochs:
    scratch: int = 30
    head: int = 10
    finetune: int = 10


@dataclass
class StepsBudget:
    """Optimizer steps per phase; null: the epochs key decides (harness.stopping)."""

    scratch: int | None = None
    head: int | None = None
    finetune: int | None = None


@dataclass
class EarlyStopping:
    enabled: bool = False
    monitor: Monitor = Monitor.val_loss
    patience: int = 3
    min_delta: float = 0.0


@dataclass
class Scratch:
    """How the scratch regime trains beyond its epochs (harness.regimes.train_scratch)."""

    model: ScratchModel = ScratchModel.backbone
    bn_momentum: float | None = None  # null: the architecture's own (scratch.model=backbone)
    image_size: int | None = None  # null: backbone.image_size
    dropout: float | None = None  # scratch.model=small_convnet; null: as in Chollet's book (0.5 with augment, else 0)


@dataclass
class Augmentation:
    rotation_degrees: int = 40
    shift: float = 0.2
    shear: float = 0.2
    zoom: float = 0.2
    horizontal_flip: bool = True
    fill_mode: FillMode = FillMode.nearest  # how pixels from outside the image are filled


@dataclass
class Config:
    """The primary config's keys and types; the values and their comments live in harness/conf/config.yaml."""

    backbone: Backbone = field(default_factory=Backbone)
    data: Data = field(default_factory=Data)
    head: Head = field(default_factory=Head)
    study: str = MISSING
    tracking_uri: str | None = None
    regimes: list[Regime] = MISSING
    unfreeze_at: str = MISSING
    lr: float = MISSING
    head_lr: float = MISSING
    optimizer: Optimizer = MISSING
    data_fraction: float = MISSING
    seed: int = MISSING
    augment: bool = MISSING
    augmentation: Augmentation = field(default_factory=Augmentation)
    epochs: Epochs = field(default_factory=Epochs)
    steps_budget: StepsBudget = field(default_factory=StepsBudget)
    scratch: Scratch = field(default_factory=Scratch)
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    batch_size: int = MISSING
    cache: bool = MISSING
    cache_dir: str = MISSING
    precision: Precision = MISSING
    log_model: bool = MISSING
    force: bool = MISSING
    dry_run: bool = MISSING
    threads: int | None = None
    feature_memory_gb: float = MISSING
    lease_s: float = MISSING
    heartbeat_s: float = MISSING
    wait_for_others: bool = False
    # hypotheses stated before the run, e.g. {frozen: ">= 0.97", finetune_minus_frozen: "> 0"}: recorded on the
    # sweep's parent run (or the job run) when the work starts, judged by the report; not part of any identity
    targets: dict[str, str] = field(default_factory=dict)
    sweep_run: str | None = None


# where harness/conf/config.yaml's defaults list finds it (`- schema`), for `python -m harness` and Hydra's compose API
ConfigStore.instance().store(name="schema", node=Config, provider="harness")
