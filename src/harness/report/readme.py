"""Splicing the report's Markdown table into an experiment's README, between its generated-block markers.

    <!-- begin results/results.md (generated: do not edit by hand) -->
    ... replaced by the current results/results.md ...
    <!-- end results/results.md -->

The marker names the results file relative to the README, so a README with several result folders
(results/, results_val_loss/) has one block per folder and each report replaces only its own.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from harness.errors import HarnessError

ANY_BEGIN = re.compile(r"<!-- begin ([\w./-]+)[ -]")


def marker_name(readme: Path, results_md: Path) -> str:
    """The results file as the README's markers name it: relative to the README's folder, with '/'."""
    return Path(os.path.relpath(results_md.resolve(), readme.resolve().parent)).as_posix()


def _block(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- begin {re.escape(name)}\b[^>]*-->\n)(.*?)(<!-- end {re.escape(name)} -->)", re.S)


def check_readme(readme: Path | str, results_md: Path | str) -> str:
    """The README's text when it has the markers of `results_md`; HarnessError (what is missing) otherwise.

    Called before the report writes anything, so a wrong readme= costs nothing.
    """
    readme, results_md = Path(readme), Path(results_md)
    if not readme.is_file():
        raise HarnessError(f"readme={str(readme)!r}: no such file (nothing written)")
    text = readme.read_text(encoding="utf-8")
    name = marker_name(readme, results_md)
    if not _block(name).search(text):
        others = ", ".join(sorted(set(ANY_BEGIN.findall(text)))) or "none"
        raise HarnessError(
            f"readme={str(readme)!r} has no '<!-- begin {name} (generated: do not edit by hand) -->' ..."
            f" '<!-- end {name} -->' markers, each on its own line, for the table to go between"
            f" (markers there: {others}; nothing written)"
        )
    return text


def splice(text: str, readme: Path, results_md: Path) -> str:
    """`text` (a README checked by `check_readme`) with its block of `results_md` replaced by that file."""
    table = results_md.read_text(encoding="utf-8")
    table = table if table.endswith("\n") else table + "\n"
    return _block(marker_name(readme, results_md)).sub(lambda m: m[1] + table + m[3], text, count=1)
