"""How a job ended, as the entry point records it: one table from outcome to ledger entry and exit status."""

from __future__ import annotations

from conftest import compose

from harness.sweep import ledger, outcome


def test_every_ledger_outcome_has_a_single_run_exit_status():
    assert set(outcome.EXIT_STATUS) == set(ledger.OUTCOMES)
    assert [o for o, status in outcome.EXIT_STATUS.items() if status == 0] == ["finished", "skipped"]
    assert outcome.BAD_INPUT == 2 and outcome.BAD_INPUT not in outcome.EXIT_STATUS.values()


def test_bad_input_ends_failed_with_exit_status_2_and_the_message(tmp_path, caplog):
    ending = outcome.run_job(compose("data=synthetic", "lr=0", f"cache_dir={tmp_path}"), ["lr=0"])
    assert (ending.entry.outcome, ending.status, ending.objective) == ("failed", 2, None)
    assert "lr=0.0 must be > 0" in ending.entry.detail and "lr=0.0 must be > 0" in caplog.text


def test_a_plan_trains_nothing_and_records_nothing(tmp_path, capsys):
    cfg = compose(
        "data=synthetic", "dry_run=true", "regimes=[frozen]", "backbone.weights=null", f"cache_dir={tmp_path}"
    )
    ending = outcome.run_job(cfg, ["dry_run=true"])
    assert ending == outcome.Ending(None, 0)
    assert "job 0:" in capsys.readouterr().out
