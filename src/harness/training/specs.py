"""The regimes a study compares, in one table that every module reads: the config's choices and checks, the
stopping rule's phases, run names and tags, the report's columns, labels and colours.

Adding a regime is a row here, its training function in `harness.training.regimes`, and its place in
`harness.jobs.job`'s order; nothing else lists regimes by hand.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RegimeSpec:
    """What the harness needs to know about one regime."""

    name: str  # as written in `regimes=[...]`, run names and tags
    phase: str  # its key under `epochs` and `steps_budget`
    lr_key: str  # the config key of the learning rate it trains at
    label: str  # in tables and figures
    color: str  # in figures (matplotlib's tab palette)
    pretrained: bool  # needs the backbone's pretrained weights
    starts_from: str | None = None  # the regime whose trained model it continues, in the same job


REGIMES: dict[str, RegimeSpec] = {
    spec.name: spec
    for spec in (
        RegimeSpec("scratch", "scratch", "head_lr", "scratch", "tab:gray", pretrained=False),
        RegimeSpec("frozen", "head", "head_lr", "frozen", "tab:blue", pretrained=True),
        RegimeSpec("finetune", "finetune", "lr", "fine-tuned", "tab:orange", pretrained=True, starts_from="frozen"),
    )
}
NAMES = tuple(REGIMES)  # in the order of the method: scratch, frozen, finetune
PHASES = tuple(spec.phase for spec in REGIMES.values())


def spec(name: str) -> RegimeSpec:
    return REGIMES[str(name)]


def needs_pretrained(regimes: list[str] | tuple[str, ...]) -> bool:
    """Whether any of these regimes trains on the pretrained backbone (then its weights must load)."""
    return any(REGIMES[str(r)].pretrained for r in regimes)
