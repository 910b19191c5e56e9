"""Checks of a config that need the backbone registry: a known backbone, a layer of it for `unfreeze_at`, a
weights file that exists, image sizes it accepts. With the schema's own (`Config.problems`), every bad value
is named with what is allowed, all at once, before any model or run exists.
"""

from __future__ import annotations

from harness.config.schema import Config
from harness.errors import HarnessError
from harness.training import backbones, specs


def backbone_problems(cfg: Config) -> list[str]:
    """What is wrong with the backbone settings: the name, the boundary, the weights, the image sizes."""
    name = cfg.backbone.name
    try:
        spec = backbones.get_spec(name)
    except HarnessError as exc:
        return [str(exc)]  # nothing else about the backbone can be checked
    out = []
    try:
        backbones.check_boundary(name, cfg.unfreeze_at)
    except HarnessError as exc:
        out.append(str(exc))
    try:
        backbones.check_weights(cfg.backbone.weights)
    except HarnessError as exc:
        out.append(str(exc))
    minimum = spec.min_image_size
    if cfg.backbone.image_size < minimum:
        out.append(f"backbone.image_size={cfg.backbone.image_size} must be >= {minimum} for {name}")
    return out


def settings_problems(cfg: Config) -> list[str]:
    """What is wrong with each regime's own node (`scratch.*`, `l2sp.*`), judged against the backbone's smallest
    input where it is known."""
    try:
        name, minimum = cfg.backbone.name, backbones.get_spec(cfg.backbone.name).min_image_size
    except HarnessError:
        name, minimum = cfg.backbone.name, 1
    return [p for regime in specs.SETTINGS for p in getattr(cfg, regime).problems(name, minimum)]


def problems(cfg: Config) -> list[str]:
    """Every problem with the config, one sentence each (empty when it is fine)."""
    return [*backbone_problems(cfg), *settings_problems(cfg), *cfg.problems()]


def validate(cfg: Config) -> None:
    """Raise HarnessError naming every bad value at once."""
    found = problems(cfg)
    if found:
        raise HarnessError("invalid config:\n  - " + "\n  - ".join(found))
