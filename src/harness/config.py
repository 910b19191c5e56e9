"""Checks on a composed config, and its identity (hash), done before any model or run exists.

Hydra composes and OmegaConf resolves; this module says whether the values make sense for a study and
names every bad value with what is allowed, so a sweep never starts training on nonsense.
"""

from __future__ import annotations

import numbers
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness import backbones
from harness.data import BAD_FILE_POLICIES, DATA_SOURCES
from harness.errors import HarnessError

REGIMES = ("scratch", "frozen", "finetune")
OPTIMIZERS = ("rmsprop", "adam")
POOLINGS = ("avg", "flatten")

PRECISIONS = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def problems(cfg: DictConfig) -> list[str]:
    """Every problem with the config, one sentence each (empty when it is fine)."""
    out: list[str] = []
    name = cfg.backbone.name
    try:
        backbones.get_spec(name)
    except HarnessError as exc:
        return [str(exc)]  # nothing else about the backbone can be checked

    try:
        backbones.check_boundary(name, cfg.unfreeze_at)
    except HarnessError as exc:
        out.append(str(exc))
    try:
        backbones.check_weights(cfg.backbone.weights)
    except HarnessError as exc:
        out.append(str(exc))
    size = cfg.backbone.image_size
    minimum = backbones.get_spec(name).min_image_size
    if not _is_int(size) or size < minimum:
        out.append(f"backbone.image_size={size!r} must be an integer >= {minimum} for {name}")

    for key in ("lr", "head_lr"):
        value = cfg[key]
        if not _is_number(value) or not value > 0:
            out.append(f"{key}={value!r} must be a number > 0 (e.g. {key}=1e-4)")
    fraction = cfg.data_fraction
    if not _is_number(fraction) or not 0 < fraction <= 1:
        out.append(f"data_fraction={fraction!r} must be a number in (0, 1]")
    if not _is_int(cfg.seed):
        out.append(f"seed={cfg.seed!r} must be an integer")
    if not _is_int(cfg.batch_size) or cfg.batch_size < 1:
        out.append(f"batch_size={cfg.batch_size!r} must be an integer >= 1")
    if cfg.optimizer not in OPTIMIZERS:
        out.append(f"optimizer={cfg.optimizer!r} is not allowed; use one of {list(OPTIMIZERS)}")
    if cfg.get("precision", "fp32") not in PRECISIONS:
        out.append(f"precision={cfg.precision!r} is not allowed; use one of {list(PRECISIONS)}")
    if not isinstance(cfg.augment, bool):
        out.append(f"augment={cfg.augment!r} must be true or false")

    regimes = list(cfg.regimes) if OmegaConf.is_list(cfg.regimes) else [cfg.regimes]
    unknown = [r for r in regimes if r not in REGIMES]
    if unknown or not regimes:
        out.append(f"regimes={regimes!r}: {unknown or 'empty'} not allowed; use a non-empty subset of {list(REGIMES)}")
    if len(set(regimes)) != len(regimes):
        out.append(f"regimes={regimes!r} names a regime twice")
    if "finetune" in regimes and "frozen" not in regimes:
        out.append(
            "regimes includes finetune but not frozen: fine-tuning starts from the trained frozen model "
            "of the same job, so add frozen (regimes=[frozen,finetune])"
        )
    epoch_keys = {"scratch": "scratch", "frozen": "head", "finetune": "finetune"}
    for regime in regimes:
        key = epoch_keys.get(regime)
        if key is None:
            continue
        value = cfg.epochs[key]
        if not _is_int(value) or value < 1:
            out.append(f"epochs.{key}={value!r} must be an integer >= 1 when regime {regime} runs")

    if cfg.head.pooling not in POOLINGS:
        out.append(f"head.pooling={cfg.head.pooling!r} is not allowed; use one of {list(POOLINGS)}")
    if not _is_int(cfg.head.units) or cfg.head.units < 0:
        out.append(f"head.units={cfg.head.units!r} must be an integer >= 0 (0: no hidden layer)")
    if not _is_number(cfg.head.dropout) or not 0 <= cfg.head.dropout < 1:
        out.append(f"head.dropout={cfg.head.dropout!r} must be a number in [0, 1)")

    if cfg.data.get("source", "folder") not in DATA_SOURCES:
        out.append(f"data.source={cfg.data.source!r} is not allowed; use one of {list(DATA_SOURCES)}")
    if cfg.data.get("on_bad_file", "skip") not in BAD_FILE_POLICIES:
        out.append(f"data.on_bad_file={cfg.data.on_bad_file!r} is not allowed; use one of {list(BAD_FILE_POLICIES)}")
    return out


def validate(cfg: DictConfig) -> None:
    """Raise HarnessError naming every bad value at once."""
    found = problems(cfg)
    if found:
        raise HarnessError("invalid config:\n  - " + "\n  - ".join(found))


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain Python data, without Hydra's own node.

    The `hydra` node is left out before resolving: in a sweep's launching process it holds values
    (hydra.job.num) that only exist inside a job.
    """
    return {
        key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
        for key in cfg
        if key != "hydra"
    }


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """`{'a': {'b': 1}}` -> `{'a.b': '1'}`, lists kept as their string form: MLflow params."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)
    return out
