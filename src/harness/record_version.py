"""Which form a record was written in, and every older form still read, in one place.

The harness stamps what it writes with `CURRENT`: each MLflow run and experiment it creates carries the tag
`record_version`, each report folder `record_version` in its summary.json. A record without the stamp was written
before it existed: version 1. Readers of a field whose form changed ask this module, so the branches for older
records live here, each with its test (`tests/test_record_version.py`), and the next change of form is a new
version here rather than another `if` where the field is read.

Version 1 (records written up to 2026-12-06), in what it differs from version 2:

- a job run may lack `lease_s` (the reader's default lease applies) and `ticket` (it is ordered first, 0);
- a sweep's ledger entry may be the text "<outcome> [run id or detail]" rather than JSON;
- an experiment may lack MLflow's experiment kind (the harness sets it when it opens the study again);
- a regime run may lack the early-stopping params: it ran all its epochs ("off");
- a report folder's targets.json may hold a bare {name: text} (stated for every configuration), its
  comparisons.csv may be absent (the fine-tuned − frozen paired t of results.csv stands for it), and its seeds
  for 80% power came from a noncentral t that overstated them (the reader recomputes them).

A version-2 record never takes these forms; meeting one is a damaged record, and the reader says so.
Kept out on purpose: the job identity's rules for keys added later (`harness.jobs.identity`): they decide
which configs are the same job, not how a record reads, and a record version would not change them.

This module imports nothing from the harness, so every layer can read through it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TAG = "record_version"
CURRENT = 2
UNSTAMPED = 1  # what a record without the stamp is
STAMP = {TAG: str(CURRENT)}
_RUN_ID = re.compile(r"\b[0-9a-f]{32}\b")


class DamagedRecord(Exception):
    """A record stamped with a version whose form it does not have."""


def of(tags: Mapping[str, Any]) -> int:
    """The version a run or experiment was written in, from its tags (plain names or `tags.` columns)."""
    value = tags.get(TAG, tags.get(f"tags.{TAG}"))
    if value is None or (isinstance(value, float) and value != value):  # absent, or NaN in a search's frame
        return UNSTAMPED
    return int(value)


def of_folder(folder: Path | str) -> int:
    """The version a report folder was written in (its summary.json's stamp)."""
    path = Path(folder) / "summary.json"
    try:
        return int(json.loads(path.read_text(encoding="utf-8")).get(TAG, UNSTAMPED))
    except (OSError, ValueError, AttributeError):
        return UNSTAMPED


def _old_form(tags: Mapping[str, Any], what: str) -> None:
    """Refuse an older form in a record stamped with a version that never wrote it."""
    version = of(tags)
    if version >= 2:
        raise DamagedRecord(f"a record stamped {TAG}={version} lacks {what}, which every version-2 record has")


# --- job runs (leases and claims) ----------------------------------------------------------------------------


def lease_s(tags: Mapping[str, Any], tag: str, default_s: float) -> float:
    """The lease a job run recorded; version 1 runs from before leases get `default_s`."""
    value = tags.get(tag)
    if value is None:
        _old_form(tags, f"the {tag!r} tag")
        return float(default_s)
    return float(value)


def ticket(tags: Mapping[str, Any], tag: str, choosing: str) -> int | None:
    """A claim's ticket; None while it is choosing; version 1 runs from before tickets hold first (0)."""
    value = tags.get(tag)
    if value is None:
        _old_form(tags, f"the {tag!r} tag")
        return 0
    return None if value == choosing else int(value)


# --- a sweep's ledger -------------------------------------------------------------------------------------------


def ledger_fields(value: str) -> tuple[str, str | None, str]:
    """(outcome, run id, detail) of a ledger entry: JSON, or version 1's "<outcome> [run id or detail]" text
    (only a skipped job's text names a run id). The ledger's entries are tags of the sweep's run, whose stamp the
    caller does not have at hand; the JSON form is told apart by its shape."""
    try:
        data = json.loads(value)
    except ValueError:
        data = None
    if isinstance(data, dict) and "outcome" in data:
        return str(data["outcome"]), data.get("run_id"), str(data.get("detail", ""))
    outcome, _, detail = value.partition(" ")
    found = _RUN_ID.search(detail) if outcome == "skipped" else None
    return outcome, found.group(0) if found else None, detail


# --- experiments ------------------------------------------------------------------------------------------------


def missing_experiment_tags(tags: Mapping[str, Any], wanted: Mapping[str, str]) -> dict[str, str]:
    """The tags a study opened again still needs: version 1 experiments lack the experiment kind (which the UI
    needs) and the stamp itself; both are set then, so the study reads as version 2 afterwards."""
    return {k: v for k, v in wanted.items() if tags.get(k) is None}


# --- regime runs in the report ------------------------------------------------------------------------------


def stopping_unlogged(tags: Mapping[str, Any]) -> str:
    """The early-stopping rule of a regime run that logged none: version 1 runs from before the rule ran all their
    epochs ("off"); a version-2 run always logs it, so one without it shows as "not recorded"."""
    return "off" if of(tags) < 2 else "not recorded"


# --- report folders -----------------------------------------------------------------------------------------------


def targets_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry of a report folder's targets.json as {"targets", "configurations"}: version 1 reports held the
    bare {name: text}, stated for every configuration (no regime is called "targets")."""
    return entry if "targets" in entry else {"targets": entry, "configurations": None}


def paired_t_stands_in(folder: Path | str) -> bool:
    """Whether results.csv's recorded fine-tuned − frozen paired t stands in for a missing comparisons.csv: so in
    version 1 folders (written before the comparisons were); a version 2 folder without it compared nothing."""
    return of_folder(folder) < 2


def power_recomputed(folder: Path | str) -> bool:
    """Whether the seeds for 80% power of a folder's paired-t and bootstrap rows are recomputed on reading: version 1
    reports computed them with a noncentral t that returned NaN at large effects, and so overstated them."""
    return of_folder(folder) < 2
