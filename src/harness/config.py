"""Checks on a composed config, done before any model or run exists.

Types and choices are Hydra's business (harness.schema: `lr=abc` fails at compose time); this module checks
what a type cannot say: ranges, a layer of the chosen backbone, regimes that make sense together, a data
folder named when `data=folder`. Every bad value is named with what is allowed, so a sweep never starts
training on nonsense.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness import backbones
from harness.errors import HarnessError
from harness.schema import Regime

# Keras policy of each precision; auto is resolved per job to one of the others (runtime.resolve_precision)
PRECISIONS: dict[str, str | None] = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16", "auto": None}


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
    minimum = backbones.get_spec(name).min_image_size
    if cfg.backbone.image_size < minimum:
        out.append(f"backbone.image_size={cfg.backbone.image_size} must be >= {minimum} for {name}")
    scratch = cfg.scratch
    if scratch.image_size is not None and scratch.image_size < minimum:
        out.append(f"scratch.image_size={scratch.image_size} must be >= {minimum} for {name}, or null")
    if scratch.dropout is not None and not 0 <= scratch.dropout < 1:
        out.append(f"scratch.dropout={scratch.dropout} must be in [0, 1), or null (Chollet's choice)")
    if scratch.bn_momentum is not None and not 0 <= scratch.bn_momentum < 1:
        out.append(f"scratch.bn_momentum={scratch.bn_momentum} must be in [0, 1) (e.g. 0.99), or null")

    for key in ("lr", "head_lr"):
        if not cfg[key] > 0:
            out.append(f"{key}={cfg[key]} must be > 0 (e.g. {key}=1e-4)")
    if not 0 < cfg.data_fraction <= 1:
        out.append(f"data_fraction={cfg.data_fraction} must be in (0, 1]")
    if cfg.batch_size < 1:
        out.append(f"batch_size={cfg.batch_size} must be >= 1")

    regimes = [str(r) for r in cfg.regimes]
    if not regimes:
        out.append(f"regimes=[] is empty; use a non-empty subset of {[r.value for r in Regime]}")
    if len(set(regimes)) != len(regimes):
        out.append(f"regimes={regimes} names a regime twice")
    if "finetune" in regimes and "frozen" not in regimes:
        out.append(
            "regimes includes finetune but not frozen: fine-tuning starts from the trained frozen model "
            "of the same job, so add frozen (regimes=[frozen,finetune])"
        )
    epoch_keys = {"scratch": "scratch", "frozen": "head", "finetune": "finetune"}
    for regime in regimes:
        value = cfg.epochs[epoch_keys[regime]]
        if value < 1:
            out.append(f"epochs.{epoch_keys[regime]}={value} must be >= 1 when regime {regime} runs")

    for phase, steps in (cfg.get("steps_budget") or {}).items():
        if steps is not None and steps < 1:
            out.append(f"steps_budget.{phase}={steps} must be >= 1 (optimizer steps), or null to use epochs.{phase}")
    stop = cfg.get("early_stopping")
    if stop is not None:
        if stop.patience < 1:
            out.append(f"early_stopping.patience={stop.patience} must be >= 1 (epochs without improvement)")
        if stop.min_delta < 0:
            out.append(f"early_stopping.min_delta={stop.min_delta} must be >= 0")

    if not cfg.lease_s > 0:
        out.append(f"lease_s={cfg.lease_s} must be > 0 (seconds without a heartbeat before a run counts as dead)")
    elif not 0 < cfg.heartbeat_s <= cfg.lease_s / 3:
        out.append(
            f"heartbeat_s={cfg.heartbeat_s} must be > 0 and at most a third of lease_s={cfg.lease_s} "
            f"(<= {cfg.lease_s / 3:g}), so that a live job is never taken for dead between two beats"
        )
    if cfg.head.units < 0:
        out.append(f"head.units={cfg.head.units} must be >= 0 (0: no hidden layer)")
    if not 0 <= cfg.head.dropout < 1:
        out.append(f"head.dropout={cfg.head.dropout} must be in [0, 1)")
    if cfg.data.max_pixels < 1:
        out.append(f"data.max_pixels={cfg.data.max_pixels} must be >= 1 (width x height of the largest image allowed)")
    if cfg.data.source == "folder" and (OmegaConf.is_missing(cfg.data, "path") or not cfg.data.path):
        out.append(
            "data=folder needs data.path: data.path=/path/to/images (train/, validation/ and optionally "
            "test/, one subfolder per class); or data=cats_and_dogs_filtered (downloaded) or data=synthetic"
        )
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
        key: OmegaConf.to_container(cfg[key], resolve=True, enum_to_str=True)
        if OmegaConf.is_config(cfg[key])
        else cfg[key]
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
