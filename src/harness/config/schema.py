"""The config's types and ranges, as dataclasses in Hydra's ConfigStore.

A wrong type or an unknown choice fails at compose time with Hydra's own message naming the key (`lr=abc`,
`optimizer=sgdd`). conf/config.yaml lists `schema` first in its defaults, so every YAML file and override is
merged onto these types. After composition the config is converted once into these dataclasses
(`harness.config.load`), and each node says what is wrong with its own values (`problems`); rules that need
the backbone registry (a layer of the chosen backbone) are in `harness.config.checks`. Choices are `StrEnum`s:
they compare equal to their names and print as them, so run names, MLflow params and job identities read the
same strings as the YAML. A field whose metadata says `result_free` never changes a result (where results go,
how fast they come): it is left out of job identities and report columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass, make_dataclass
from enum import StrEnum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from harness.training import specs
from harness.training.regime import regime_settings

# the registry's regimes (specs.REGIMES); mypy cannot see members made this way
Regime = StrEnum("Regime", {name: name for name in specs.NAMES})  # type: ignore[misc]


class Optimizer(StrEnum):
    rmsprop = "rmsprop"
    adam = "adam"


class Precision(StrEnum):
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"
    auto = "auto"  # resolved per job by harness.training.runtime.resolve_precision


class Monitor(StrEnum):
    val_loss = "val_loss"
    val_acc = "val_acc"


class Pooling(StrEnum):
    avg = "avg"
    flatten = "flatten"


class DataSource(StrEnum):
    folder = "folder"
    manifest = "manifest"  # a CSV of files (path, label, split)
    download = "download"
    synthetic = "synthetic"


class FillMode(StrEnum):
    nearest = "nearest"  # ImageDataGenerator's default
    reflect = "reflect"  # Keras' RandomRotation's default (the TensorFlow tutorial)


class BadFilePolicy(StrEnum):
    skip = "skip"
    stop = "stop"


def result_free(default: Any = MISSING, **kwargs: Any) -> Any:
    """A field that never changes a result: left out of job identities and report columns."""
    metadata = {"result_free": True, **kwargs.pop("metadata", {})}
    if "default_factory" in kwargs:
        return field(metadata=metadata, **kwargs)
    return field(default=default, metadata=metadata, **kwargs)


def run_tag(name: str, default: Any = MISSING) -> Any:
    """A field every job and regime run carries as the MLflow tag `name`, to filter runs by in the UI and in
    `search_runs` (`tags.lr = '1e-05'`); `RUN_TAGS` collects them."""
    return field(default=default, metadata={"run_tag": name})


def in_range(out: list[str], name: str, value: float | None, low: float, high: float | None, hint: str = "") -> None:
    """Append a problem unless low <= value (< high); None passes (a null that means "the default")."""
    if value is None or (low <= value and (high is None or value < high)):
        return
    allowed = f">= {low:g}" if high is None else f"in [{low:g}, {high:g})"
    out.append(f"{name}={value} must be {allowed}{hint}")


@dataclass
class Backbone:
    name: str = run_tag("backbone")  # checked against harness.training.backbones' known names
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

    def problems(self) -> list[str]:
        out: list[str] = []
        in_range(out, "data.max_pixels", self.max_pixels, 1, None, " (width x height of the largest image allowed)")
        if self.source == DataSource.manifest and not self.path:
            out.append("data=manifest needs data.path: data.path=/path/to/files.csv (columns path, label, split)")
        if self.source == DataSource.folder and not self.path:
            out.append(
                "data=folder needs data.path: data.path=/path/to/images (train/, validation/ and optionally "
                "test/, one subfolder per class); or data=cats_and_dogs_filtered (downloaded) or data=synthetic"
            )
        return out


@dataclass
class Head:
    pooling: Pooling = Pooling.avg
    units: int = 256
    dropout: float = 0.5

    def problems(self) -> list[str]:
        out: list[str] = []
        in_range(out, "head.units", self.units, 0, None, " (0: no hidden layer)")
        in_range(out, "head.dropout", self.dropout, 0, 1)
        return out


def _steps_problems(node: Any) -> list[str]:
    out: list[str] = []
    for phase in specs.PHASES:
        hint = f" (optimizer steps), or null to use epochs.{phase}"
        in_range(out, f"steps_budget.{phase}", getattr(node, phase), 1, None, hint)
    return out


# One key per phase a regime introduces (specs.PHASES), made from the registry: `epochs.<phase>`, the most epochs
# the phase may run, and `steps_budget.<phase>`, optimizer steps instead (null: the epochs key decides;
# harness.training.stopping).
Epochs = make_dataclass("Epochs", [(phase, int, default) for phase, default in specs.PHASES.items()])
StepsBudget = make_dataclass("StepsBudget", [(phase, int | None, None) for phase in specs.PHASES])
# Each regime's own settings node (`scratch.model`, `l2sp.alpha`), declared in its module: the base of Config.
RegimeSettings = make_dataclass(
    "RegimeSettings", [(name, node, regime_settings(node)) for name, node in specs.SETTINGS.items()]
)
for _made in (Epochs, StepsBudget, RegimeSettings):
    _made.__module__ = __name__  # so that a config pickled for a joblib or Ray worker finds these same classes


@dataclass
class EarlyStopping:
    enabled: bool = True
    monitor: Monitor = Monitor.val_loss
    patience: int = 5
    min_delta: float = 0.0

    def problems(self) -> list[str]:
        out: list[str] = []
        in_range(out, "early_stopping.patience", self.patience, 1, None, " (epochs without improvement)")
        in_range(out, "early_stopping.min_delta", self.min_delta, 0, None)
        return out


@dataclass
class Augmentation:
    rotation_degrees: int = 40
    shift: float = 0.2
    shear: float = 0.2
    zoom: float = 0.2
    horizontal_flip: bool = True
    fill_mode: FillMode = FillMode.nearest  # how pixels from outside the image are filled


@dataclass
class Config(RegimeSettings):  # type: ignore[valid-type,misc]
    """The primary config's keys and types; the values and their comments live in conf/config.yaml. The regimes'
    own nodes come first, from `RegimeSettings`."""

    backbone: Backbone = field(default_factory=Backbone)
    data: Data = field(default_factory=Data)
    head: Head = field(default_factory=Head)
    study: str = result_free(metadata={"run_tag": "study"})
    tracking_uri: str | None = result_free(None)
    regimes: list[Regime] = MISSING
    unfreeze_at: str = run_tag("unfreeze_at")
    lr: float = run_tag("lr")
    head_lr: float = MISSING
    optimizer: Optimizer = MISSING
    data_fraction: float = run_tag("data_fraction")
    seed: int = run_tag("seed")
    augment: bool = MISSING
    augmentation: Augmentation = field(default_factory=Augmentation)
    epochs: Epochs = field(default_factory=Epochs)  # type: ignore[valid-type]
    steps_budget: StepsBudget = field(default_factory=StepsBudget)  # type: ignore[valid-type]
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    batch_size: int = MISSING
    cache: bool = result_free()
    cache_dir: str = result_free()
    precision: Precision = MISSING
    log_model: bool = result_free()
    force: bool = result_free()
    dry_run: bool = result_free()
    threads: int | None = result_free(None)
    lease_s: float = result_free()
    heartbeat_s: float = result_free()
    wait_for_others: bool = result_free(False)
    # hypotheses stated before the run, e.g. {frozen: ">= 0.97", finetune_minus_frozen: "> 0"}: recorded on the
    # sweep's parent run (or the job run) when the work starts, judged by the report; not part of any identity
    targets: dict[str, str] = result_free(default_factory=dict)
    sweep_run: str | None = result_free(None)

    def problems(self) -> list[str]:
        """Every problem with the values of this config that needs no registry, one sentence each."""
        out = [*self.data.problems(), *self.head.problems()]
        out += [*_steps_problems(self.steps_budget), *self.early_stopping.problems()]
        for key in ("lr", "head_lr"):
            if not getattr(self, key) > 0:
                out.append(f"{key}={getattr(self, key)} must be > 0 (e.g. {key}=1e-4)")
        if not 0 < self.data_fraction <= 1:
            out.append(f"data_fraction={self.data_fraction} must be in (0, 1]")
        in_range(out, "batch_size", self.batch_size, 1, None)
        if not self.lease_s > 0:
            out.append(f"lease_s={self.lease_s} must be > 0 (seconds without a heartbeat before a run counts as dead)")
        elif not 0 < self.heartbeat_s <= self.lease_s / 3:
            out.append(
                f"heartbeat_s={self.heartbeat_s} must be > 0 and at most a third of lease_s={self.lease_s} "
                f"(<= {self.lease_s / 3:g}), so that a live job is never taken for dead between two beats"
            )
        return out + self.regime_problems()

    def regime_problems(self) -> list[str]:
        regimes = [str(r) for r in self.regimes]
        out: list[str] = []
        if not regimes:
            out.append(f"regimes=[] is empty; use a non-empty subset of {list(specs.NAMES)}")
        if len(set(regimes)) != len(regimes):
            out.append(f"regimes={regimes} names a regime twice")
        for regime in regimes:
            spec = specs.spec(regime)
            if spec.starts_from is not None and spec.starts_from not in regimes:
                out.append(
                    f"regimes includes {regime} but not {spec.starts_from}: {regime} starts from the trained "
                    f"{spec.starts_from} model of the same job, so add {spec.starts_from} "
                    f"(regimes=[{spec.starts_from},{regime}])"
                )
            for phase in spec.phases:
                value = getattr(self.epochs, phase)
                if value < 1:
                    out.append(f"epochs.{phase}={value} must be >= 1 when regime {regime} runs")
        return out


RESULT_FREE_KEYS = tuple(f.name for f in fields(Config) if f.metadata.get("result_free"))


def _run_tags(node: type, prefix: str = "") -> dict[str, str]:
    out = {}
    for f in fields(node):
        if "run_tag" in f.metadata:
            out[f.metadata["run_tag"]] = prefix + f.name
        elif is_dataclass(f.default_factory):  # a nested node (backbone, data, ...): its tagged fields
            out.update(_run_tags(f.default_factory, f"{prefix}{f.name}."))
    return out


# MLflow tag name -> the config key it shows, e.g. {"backbone": "backbone.name", "lr": "lr"}
RUN_TAGS: dict[str, str] = _run_tags(Config)

# where conf/config.yaml's defaults list finds it (`- schema`), for `python -m harness` and Hydra's compose API
ConfigStore.instance().store(name="schema", node=Config, provider="harness")
