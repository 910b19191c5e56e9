"""The config: its types and ranges (`schema`), the checks that need the backbone registry (`checks`), and the one
conversion from Hydra's DictConfig into those types (`load`), done at the edge: the entry point and the
sweeper convert, everything below takes the typed `Config`.
"""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Any

from omegaconf import DictConfig, OmegaConf

from harness.config import checks
from harness.config.schema import RESULT_FREE_KEYS, Config

__all__ = [
    "RESULT_FREE_KEYS",
    "Config",
    "convert",
    "flatten",
    "load",
    "plain",
    "problems",
    "to_container",
    "validate",
]


def load(cfg: DictConfig | Config) -> Config:
    """The composed config as the schema's dataclasses (without Hydra's own node), its values checked: HarnessError
    naming every bad value at once. A typed config is checked and returned as it is."""
    typed = convert(cfg)
    validate(typed)
    return typed


def convert(cfg: DictConfig | Config) -> Config:
    """The composed config as the schema's dataclasses, without Hydra's own node; values not checked."""
    if isinstance(cfg, Config):
        return cfg
    job: Any = OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k != "hydra"]) if "hydra" in cfg else cfg
    if "data" in job and OmegaConf.is_missing(job.data, "path"):  # data=folder without data.path: the schema
        job = OmegaConf.merge(job, {"data": {"path": None}})  # says so in words (Data.problems), not a traceback
    typed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), job))
    assert isinstance(typed, Config)
    return typed


def problems(cfg: DictConfig | Config) -> list[str]:
    """Every problem with the config's values, one sentence each (empty when it is fine)."""
    return checks.problems(convert(cfg))


def validate(cfg: DictConfig | Config) -> None:
    """Raise HarnessError naming every bad value at once."""
    checks.validate(convert(cfg))


def plain(node: Any) -> Any:
    """A config (typed or DictConfig) or any node of it as plain Python data: dicts, lists, str for choices."""
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True, enum_to_str=True)
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return {f.name: plain(getattr(node, f.name)) for f in dataclasses.fields(node)}
    if isinstance(node, dict):
        return {k: plain(v) for k, v in node.items()}
    if isinstance(node, list | tuple):
        return [plain(v) for v in node]
    return node.value if isinstance(node, Enum) else node


def to_container(cfg: DictConfig | Config) -> dict[str, Any]:
    """The resolved config as plain Python data, without Hydra's own node.

    The `hydra` node is left out before resolving: in a sweep's launching process it holds values
    (hydra.job.num) that only exist inside a job.
    """
    if isinstance(cfg, Config):
        return plain(cfg)
    return {str(key): plain(cfg[key]) if OmegaConf.is_config(cfg[key]) else cfg[key] for key in cfg if key != "hydra"}


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
