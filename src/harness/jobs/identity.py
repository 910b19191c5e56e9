"""What a job computes, by content: the identity that resume and the cache go by.

A job's identity hashes the photographs (each file's class, name and bytes), the pretrained weights'
bytes and the config values that change a result. It never hashes a path, a cache location or a store
address, so the same photographs in another clone or mounted elsewhere on another node are the same
job, and an edited photograph at the same path is a new one.

Cache entries also carry the identity of the code that produced them (the source of the producing
modules) and the TensorFlow and Keras versions, so a change of code never serves a stale entry.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import json
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.config import RESULT_FREE_KEYS, Config, to_container
from harness.training import specs

# The modules whose code decides what each kind of cache entry holds: decoding and the cache's own layout for
# images; the backbones' builders, the frozen stage and the derivation of features from cached cuts for features;
# and for a regime's stored state (the head phase) its training, plus the module of the regime that produces it
# (`producers`). Registries are data, not code here: the backbone and the regime a key uses enter it as their
# specs, so adding a backbone or a regime leaves every other key as it was.
IMAGES = ("harness.data.images", "harness.jobs.cache", "harness.jobs.npy_writer")
FEATURES = (*IMAGES, "harness.training.backbones", "harness.training.models", "harness.training.trainer",
            "harness.jobs.features")  # fmt: skip
STATES = (
    *FEATURES,
    "harness.training.regime",
    "harness.training.augmentation",
    "harness.training.stopping",
    "harness.training.transferability",
)  # fmt: skip  (a stored head phase keeps its features' estimates)
PRODUCERS = {"images": IMAGES, "features": FEATURES}


def producers(kind: str, regime_module: str | None = None) -> tuple[str, ...]:
    """The modules whose code a cache entry of `kind` depends on: a regime's stored state (`regime_module`'s
    `Reuse`) on its training and on that regime's own module."""
    if kind in PRODUCERS:
        return PRODUCERS[kind]
    return STATES if regime_module is None else (*STATES, regime_module)


def _settings_off(name: str) -> Callable[[Any, Mapping[str, Any]], bool]:
    return lambda node, config: name not in config.get("regimes", ())


# Keys left out of the identity while they cannot act, so that adding them kept every recorded job's identity
# (a study recorded before them is not re-trained): early stopping disabled, no step budget for any phase, a
# regime's own node in a job without that regime. Each predicate gets the node and the whole config.
OFF_WHEN: dict[str, Callable[[Any, Mapping[str, Any]], bool]] = {
    "early_stopping": lambda node, config: not node.get("enabled"),
    "steps_budget": lambda node, config: all(v is None for v in node.values()),
    **{name: _settings_off(name) for name in specs.SETTINGS},
}


# Keys added after studies were recorded, left out of the identity while they hold the value every earlier job
# implicitly had, so that those jobs keep their identities: (node, key) -> that value. A regime's settings mark
# theirs with `harness.training.regime.added_at_default`.
ADDED_AT_DEFAULT = {
    ("augmentation", "fill_mode"): "nearest",
    **{
        (name, f.name): f.default
        for name, node in specs.SETTINGS.items()
        for f in dataclasses.fields(node)
        if f.metadata.get("added_at_default")
    },
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
def code_identity(modules: tuple[str, ...]) -> str:
    """Digest of the source of `modules` (`producers`) with the TensorFlow and Keras versions: part of every
    cache key."""
    h = hashlib.sha256()
    for source in _module_sources(modules):
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
