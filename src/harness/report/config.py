"""The types of `python -m harness.report`'s config (conf/report.yaml), in Hydra's ConfigStore: a typo in a key
or an unknown adjustment fails at compose time, naming the key, as the harness's own config does."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from hydra.core.config_store import ConfigStore


class Adjust(StrEnum):
    """Adjustment of the report's p-values over all its comparisons (harness.report.stats.ADJUSTMENTS)."""

    holm = "holm"  # family-wise error (Holm's step-down)
    bh = "bh"  # false discovery rate (Benjamini-Hochberg)


@dataclass
class ReportConfig:
    study: str = "default"
    sweep: str | None = None
    tracking_uri: str | None = None
    out: str | None = "reports/${study}"
    log_to_parent: bool = True
    summary_runs: bool = True
    adjust: Adjust = Adjust.holm
    compare: str | None = None
    compare_baseline: str | None = None
    readme: str | None = None
    from_csv: str | None = None


# where conf/report.yaml's defaults list finds it (`- report_schema`)
ConfigStore.instance().store(name="report_schema", node=ReportConfig, provider="harness")
