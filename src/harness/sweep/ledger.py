"""The sweep's ledger: each job's outcome, written as a JSON tag `job.<n>` on the sweep's parent run.

A tag per job (not one shared value) because jobs on many machines write at once and MLflow has no
read-modify-write. The sweep's summary and exit status and the report's "which runs belong to this sweep"
read it back with `entries`. Version 1 sweeps wrote "<outcome> [detail]"; `harness.record_version` reads both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from harness import record_version

PREFIX = "job."
# finished: trained here; skipped: a valid FINISHED run existed (run_id names it); elsewhere: another live
# claim held it; lost: its claim was taken while it trained (leases); failed: an error (detail says which)
OUTCOMES = ("finished", "skipped", "elsewhere", "lost", "failed")


@dataclass(frozen=True)
class Entry:
    """One job's outcome."""

    outcome: str
    run_id: str | None = None  # the job run that holds its result (finished, skipped) or its holder (elsewhere)
    detail: str = ""

    def to_tag(self) -> str:
        """The tag value: JSON, cut to what MLflow keeps of a tag (the detail is shortened, never the JSON)."""
        entry = asdict(self)
        text = json.dumps(entry)
        while len(text) > 4000:
            entry["detail"] = entry["detail"][: max(0, len(entry["detail"]) - (len(text) - 4000) - 1)] + "…"
            text = json.dumps(entry)
        return text

    @classmethod
    def from_tag(cls, value: str) -> Entry:
        """An entry from its tag: JSON, or version 1's "<outcome> [run id or detail]" text."""
        return cls(*record_version.ledger_fields(value))


def key(job_num: int) -> str:
    return f"{PREFIX}{job_num}"


def entries(tags: Mapping[str, object]) -> dict[int, Entry]:
    """The ledger in a run's tags (plain tag names, or `tags.`-prefixed columns of a search), by job number."""
    out = {}
    for name, value in tags.items():
        name = str(name).removeprefix("tags.")
        if name.startswith(PREFIX) and name[len(PREFIX) :].isdigit() and isinstance(value, str):
            out[int(name[len(PREFIX) :])] = Entry.from_tag(value)
    return dict(sorted(out.items()))
