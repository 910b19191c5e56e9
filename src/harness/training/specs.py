"""The registry of regimes: one line per regime module, in the order of the method (a job trains the chosen ones in
this order). Everything else reads the specs: the config's choices, phases and settings nodes, the job's loop, the
cache keys, the plan, run names and tags, the report's columns, comparisons, labels and colours.

Adding a regime is a module in `harness.training.regimes` with its `SPEC`, and its line here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.training.regime import Recipe, RegimeSpec
from harness.training.regimes import finetune, finetune_direct, frozen, l2sp, scratch

if TYPE_CHECKING:
    from harness.training import stopping

REGIMES: dict[str, RegimeSpec] = {
    module.SPEC.name: module.SPEC
    for module in (
        scratch,
        frozen,
        finetune,
        finetune_direct,
        l2sp,
    )
}
NAMES = tuple(REGIMES)
# every phase a regime introduces, with its default epochs: the keys of `epochs` and `steps_budget`
PHASES: dict[str, int] = {s.own_phase.key: s.own_phase.epochs for s in REGIMES.values() if s.own_phase}
# each regime's own config node (`scratch`, `l2sp`), named after it
SETTINGS: dict[str, type] = {s.name: s.settings for s in REGIMES.values() if s.settings is not None}


def spec(name: str) -> RegimeSpec:
    return REGIMES[str(name)]


def chosen(regimes: list[str] | tuple[str, ...] | list) -> list[RegimeSpec]:
    """The specs of the chosen regimes, in the registry's order (the order a job trains them)."""
    names = {str(r) for r in regimes}
    return [s for s in REGIMES.values() if s.name in names]


def cuts(regimes: list[str] | tuple[str, ...] | list, recipe: Recipe) -> list[str]:
    """The frozen-stage cuts whose features the chosen regimes train on, each once, in the registry's order."""
    return list(dict.fromkeys(cut for s in chosen(regimes) for cut in s.cuts(recipe)))


def needs_pretrained(regimes: list[str] | tuple[str, ...]) -> bool:
    """Whether any of these regimes trains on the pretrained backbone (then its weights must load)."""
    return any(s.pretrained for s in chosen(regimes))


def budget(cfg, regime: str, n_train: int) -> stopping.Budget:
    """The epochs `regime` may train under this config on a training split of `n_train` images."""
    from harness.training import stopping

    return stopping.Limits.from_cfg(cfg).budget(spec(regime).phases, n_train)


def pairs() -> list[tuple[str, str]]:
    """Every (regime, baseline) comparison the specs ask for: regimes next to each other in the registry first
    (fine-tuned vs frozen, then frozen vs scratch), then those further apart; the later regime first."""
    order = {name: i for i, name in enumerate(NAMES)}
    found = [(s.name, b) for s in REGIMES.values() for b in s.compared_with]
    return sorted(found, key=lambda p: (abs(order[p[0]] - order[p[1]]), -order[p[0]]))


def headline() -> tuple[str, str]:
    """The method's own comparison: the first regime that continues another, against that one (fine-tuned −
    frozen). Recorded results.csv files keep its paired t-test as columns; its figure panel draws it."""
    return next((s.name, s.starts_from) for s in REGIMES.values() if s.starts_from)
