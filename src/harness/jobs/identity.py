"""What a job computes, by content: the identity that resume and the cache go by.

A job's identity hashes the photographs (each file's class, name and bytes), the pretrained weights'
bytes and the config values that change a result. It never hashes a path, a cache location or a store
address, so the same photographs in another clone or mounted elsewhere on another node are the same
job, and an edited photograph at the same path is a new one.

Cache entries also carry the identity of the code that produced them (the source of the producing
modules) and the TensorFlow and Keras versions, so a change of code never serves a stale entry.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.config import RESULT_FREE_KEYS, Config, to_container

# The modules whose code decides what a cache entry holds: decoding, the backbones, the models and their
# training, the cache's own layout and the derivation of features from cached cuts.
PRODUCERS = (
    "harness.data.images",
    "harness.training.backbones",
    "harness.training.models",
    "harness.training.trainer",
    "harness.training.regimes",
    "harness.training.augmentation",
    "harness.training.stopping",
    "harness.jobs.cache",
    "harness.jobs.features",
)
# Keys left out of the identity while they cannot act, so that adding them kept every recorded job's identity
# (a study recorded before them is not re-trained): early stopping disabled, no step budget for any phase, the
# scratch settings in a job without the scratch regime. Each predicate gets the node and the whole config.
OFF_WHEN = {
    "early_stopping": lambda node, config: not node.get("enabled"),
    "steps_budget": lambda node, config: all(v is None for v in node.values()),
    "scratch": lambda node, config: "scratch" not in config.get("regimes", ()),
}


# Keys added after studies were recorded, left out of the identity while they hold the value every earlier job
# implicitly had, so that those jobs keep their identities: (node, key) -> that value.
ADDED_AT_DEFAULT = {
    ("scratch", "model"): "backbone",
    ("scratch", "dropout"): None,
    ("augmentation", "fill_mode"): "nearest",
}


def digest(data: Any) -> str:
    """sha256 of a JSON-able value with sorted keys: the same value gives the same digest in any process."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:24]


@functools.lru_cache(maxsize=16)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()[:24]


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (weights), read once per process while its size and mtime stay the same."""
    resolved = Path(path).expanduser().resolve()
    st = resolved.stat()
    return _file_digest(str(resolved), st.st_size, st.st_mtime_ns)


def weights_identity(weights: str | None, backbone: str) -> str | None:
    """The pretrained weights by content: a file's digest, Keras' own ImageNet set, or None (random init,
    decided by the seed)."""
    if weights is None:
        return None
    if weights == "imagenet":
        return f"keras-imagenet-{backbone}-keras{metadata.version('keras')}"
    return file_digest(str(weights))


def _module_sources(modules: Iterable[str]) -> list[bytes]:
    out = []
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ImportError(f"no source for {name}")
        out.append(Path(spec.origin).read_bytes())
    return out


@functools.cache
def code_identity(modules: tuple[str, ...] | None = None) -> str:
    """Digest of the source of `modules` (default: PRODUCERS) with the TensorFlow and Keras versions: part of
    every cache key."""
    h = hashlib.sha256()
    for source in _module_sources(PRODUCERS if modules is None else modules):
        h.update(hashlib.sha256(source).digest())
    for lib in ("tensorflow", "keras"):
        h.update(f"{lib}={metadata.version(lib)}".encode())
    return h.hexdigest()[:16]


def result_config(cfg: Config) -> dict[str, Any]:
    """The resolved config without the keys that cannot change a result, without the data node (replaced
    by the photographs' content), without options that are off (OFF_WHEN) and with the weights named by
    content rather than by path."""
    out = to_container(cfg)
    for key in (*RESULT_FREE_KEYS, "data"):
        out.pop(key, None)
    for key, off in OFF_WHEN.items():
        if key in out and off(out[key], out):
            del out[key]
    for (node, key), default in ADDED_AT_DEFAULT.items():
        if node in out and key in out[node] and out[node][key] == default:
            del out[node][key]
    out["backbone"] = {**out["backbone"], "weights": weights_identity(cfg.backbone.weights, cfg.backbone.name)}
    return out


def job_identity(cfg: Config, splits: Mapping[str, str], class_names: Iterable[str]) -> str:
    """The identity of what a job computes: result-changing config, weights and data, all by content.

    `splits` maps each split the job uses (train after subsampling) to its `data.split_identity`.
    """
    return digest({"config": result_config(cfg), "data": {"classes": list(class_names), "splits": dict(splits)}})[:16]
