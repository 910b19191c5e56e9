"""Every older record form still read, one test each, and the stamp every new record carries.

The version 1 forms are real: hand-made tags as the harness wrote them before each change, and report folders
recorded under `experiments/` before the stamp existed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from conftest import compose

from harness import record_version, tracking
from harness.jobs import claims, leases
from harness.report import analysis, evidence
from harness.report.runs import stopping_rule
from harness.report.tables import read_table, row_keys_of
from harness.sweep import ledger

ROOT = Path(__file__).resolve().parents[1]
V1, V2 = {}, dict(record_version.STAMP)


class Run:
    """An MLflow run as the readers see it: tags and a start time."""

    def __init__(self, tags: dict[str, str], start_ms: int = 1_700_000_000_000):
        self.data = type("Data", (), {"tags": tags})()
        self.info = type("Info", (), {"start_time": start_ms, "run_id": "0" * 32})()


def test_an_unstamped_record_is_version_1_and_a_stamped_one_its_stamp():
    assert record_version.of({}) == record_version.of({"tags.record_version": float("nan")}) == 1
    assert record_version.of(V2) == record_version.of({"tags.record_version": "2"}) == record_version.CURRENT == 2


def test_a_version_1_job_run_without_a_lease_gets_the_default_and_a_version_2_one_is_damaged():
    assert leases.lease_of(Run(V1), 120) == 120.0
    assert leases.lease_of(Run({**V1, leases.LEASE_TAG: "30"}), 120) == 30.0
    with pytest.raises(record_version.DamagedRecord, match="record_version=2 lacks the 'lease_s' tag"):
        leases.lease_of(Run(V2), 120)


def test_a_version_1_job_run_without_a_ticket_holds_first_and_a_version_2_one_is_damaged():
    assert claims.ticket_of(Run(V1)) == 0
    assert claims.ticket_of(Run({**V2, claims.TICKET_TAG: claims.CHOOSING})) is None
    assert claims.ticket_of(Run({**V2, claims.TICKET_TAG: "3"})) == 3
    with pytest.raises(record_version.DamagedRecord, match="lacks the 'claim_ticket' tag"):
        claims.ticket_of(Run(V2))


def test_a_version_1_run_without_a_heartbeat_beat_last_when_it_started():
    assert leases.last_beat(Run(V1, start_ms=1_700_000_000_000)) == 1_700_000_000.0
    assert leases.last_beat(Run({**V2, "heartbeat": "1700000100.5"})) == 1_700_000_100.5


def test_a_version_1_ledger_entry_in_text_is_read_as_its_json_form_is():
    run_id = "ab" * 16
    assert ledger.Entry.from_tag(f"skipped already FINISHED as {run_id}") == ledger.Entry(
        "skipped", run_id, f"already FINISHED as {run_id}"
    )
    assert ledger.Entry.from_tag("failed ValueError: no") == ledger.Entry("failed", None, "ValueError: no")
    entry = ledger.Entry("elsewhere", run_id, "held by another sweep")
    assert ledger.Entry.from_tag(entry.to_tag()) == entry


def test_a_version_1_study_opened_again_gets_the_experiment_kind_and_the_stamp(store):
    mlflow.set_tracking_uri(store)
    old = mlflow.create_experiment("recorded-before")  # as the harness created studies in version 1: no tags
    assert record_version.of(mlflow.get_experiment(old).tags) == 1
    assert tracking.ensure_experiment("recorded-before", store) == old
    tags = mlflow.get_experiment(old).tags
    assert tags[tracking.EXPERIMENT_KIND] == "custom_model_development" and record_version.of(tags) == 2
    new = tracking.ensure_experiment("recorded-after", store)
    assert record_version.of(mlflow.get_experiment(new).tags) == 2


def test_a_version_1_regime_run_without_a_stopping_rule_ran_all_its_epochs():
    runs = pd.DataFrame(
        {
            "params.early_stopping.enabled": [None, None, "True", "False"],
            "params.early_stopping.monitor": [None, None, "val_loss", "val_loss"],
            "params.early_stopping.patience": [None, None, "5", "5"],
            "params.early_stopping.min_delta": [None, None, "0.0", "0.0"],
            "tags.record_version": [None, "2", "2", "2"],
        }
    )
    assert stopping_rule(runs).tolist() == ["off", "not recorded", "val_loss, patience 5", "off"]


def test_a_version_1_targets_entry_is_stated_for_every_configuration():
    assert record_version.targets_entry({"scratch": ">= 0.7"}) == {"targets": {"scratch": ">= 0.7"},
                                                                   "configurations": None}  # fmt: skip
    stated = {"targets": {"scratch": ">= 0.7"}, "configurations": [{"augment": "True"}]}
    assert record_version.targets_entry(stated) == stated


def stamped_copy(recorded: str, tmp_path: Path, version: int | None) -> Path:
    """A copy of a report folder recorded under experiments/, its summary.json stamped `version` (None: as is)."""
    folder = shutil.copytree(ROOT / "experiments" / recorded, tmp_path / recorded.replace("/", "_"))
    if version is not None:
        summary = json.loads((folder / "summary.json").read_text())
        (folder / "summary.json").write_text(json.dumps({**summary, record_version.TAG: version}))
    return folder


def test_a_version_1_report_folder_without_comparisons_reads_its_recorded_paired_t(tmp_path):
    old = stamped_copy("tf_mobilenetv2/results", tmp_path, None)
    assert not (old / "comparisons.csv").exists() and record_version.of_folder(old) == 1
    found = analysis.read(old, read_table(old / "results.csv"))
    assert found.comparisons["method"].tolist() == [evidence.PAIRED_T]
    new = stamped_copy("tf_mobilenetv2/results", tmp_path / "v2", 2)
    assert analysis.read(new, read_table(new / "results.csv")).comparisons.empty


def test_a_version_1_report_folder_gets_its_seeds_for_power_recomputed(tmp_path):
    """The tutorial study recorded 5 seeds for 80% power from a noncentral t; recomputed, 2. A version 2 folder
    is read as written."""
    recorded = pd.read_csv(ROOT / "experiments/tf_mobilenetv2/results_tutorial/comparisons.csv")
    old = stamped_copy("tf_mobilenetv2/results_tutorial", tmp_path, None)
    new = stamped_copy("tf_mobilenetv2/results_tutorial", tmp_path / "v2", 2)
    read = {f: analysis.read(f, read_table(f / "results.csv")).comparisons for f in (old, new)}
    assert recorded["seeds_for_80pct_power"].tolist() == read[new]["seeds_for_80pct_power"].tolist() == [5.0, 3.0]
    assert read[old]["seeds_for_80pct_power"].tolist() == [2.0, 3.0]


def test_every_run_and_report_folder_the_harness_writes_is_stamped(tmp_path, store):
    mlflow.set_tracking_uri(store)
    experiment = tracking.ensure_experiment("stamped", store)
    sweep = tracking.create_run(experiment, "sweep", {"run_kind": "sweep"})
    summary = tracking.log_run(experiment, "summary", {"run_kind": "summary"})
    for run_id in (sweep, summary):
        assert record_version.of(mlflow.get_run(run_id).data.tags) == 2
    for kind in ("job", "regime"):  # the tags job and regime runs are created with
        assert record_version.of(tracking.run_tags(compose(), "identity", "commit", kind, "frozen")) == 2
    from harness.report.build import write_report

    table = read_table(ROOT / "experiments/tf_mobilenetv2/results/results.csv")
    finished = pd.DataFrame(columns=["run_id", *row_keys_of(table)])  # no runs at hand: no curves drawn
    write_report(table, analysis.Analysis(pd.DataFrame()), finished, pd.DataFrame(), tmp_path / "out")
    assert record_version.of_folder(tmp_path / "out") == 2
