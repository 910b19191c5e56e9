"""`python -m harness.report`: tables and figures read back from a real MLflow store of a real sweep.

One real sweep (2 seeds x 2 boundaries, frozen + finetune, on the shared photographs) is trained once per
module and shared; failed and unfinished runs are added to its store with MlflowClient (real runs, no
mocks). A single offline quickstart job covers scratch, n = 1 and a study without a sweep. Every number
the report writes is checked against the store re-read with mlflow.search_runs and recomputed with scipy.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import run_cli, small_mobilenet
from scipy import stats as sps

from harness import report
from harness.errors import HarnessError
from harness.report import stats

PNG = b"\x89PNG\r\n\x1a\n"
BOUNDARIES = ["block_15_expand", "block_16_expand"]
FIGURES = [f"val_acc_curves_unfreeze_at-{b}.png" for b in BOUNDARIES] + ["test_acc_vs_unfreeze_at.png"]
# one data_fraction in the sweep: its figure would have one x position and is not drawn


def store_uri(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"


def search(store: str, study: str) -> pd.DataFrame:
    mlflow.set_tracking_uri(store)
    return mlflow.search_runs(experiment_names=[study], max_results=1000)


def add_run(client, experiment_id: str, like: pd.Series, status: str | None, **tags: str) -> str:
    """A run carrying the tags and params of `like` (overridden by `tags`), left RUNNING or terminated."""
    run_tags = {c.removeprefix("tags."): v for c, v in like.items() if c.startswith("tags.") and isinstance(v, str)}
    ignored = ("host", "pid", "head_phase", "head_phase_key")  # owner process: a reaper must not touch these
    run_tags = {k: v for k, v in run_tags.items() if not k.startswith("mlflow.") and k not in ignored}
    run_tags.update(tags)
    if run_tags["run_kind"] == "job":
        run_tags.pop("regime", None)
    run = client.create_run(experiment_id, tags=run_tags, run_name=f"injected {status}")
    params = {c.removeprefix("params."): v for c, v in like.items() if c.startswith("params.") and isinstance(v, str)}
    params["seed"] = run_tags["seed"]
    for key, value in params.items():
        client.log_param(run.info.run_id, key, value)
    client.log_metric(run.info.run_id, "test_acc", 0.0)  # would drag the mean down if it were counted
    if status is not None:
        client.set_terminated(run.info.run_id, status=status)
    return run.info.run_id


def history(client, runs: pd.DataFrame, run: pd.Series) -> dict[int, float]:
    """val_acc by step; a frozen run that reused a cached head phase has the curve of the run that trained it."""
    if run.get("tags.head_phase") == "reused":
        same = runs[
            (runs["tags.head_phase_key"] == run["tags.head_phase_key"]) & (runs["tags.head_phase"] == "trained")
        ]
        if same.empty:  # trained in another store that shared the cache: this store has no curve for it
            return {}
        run = same.iloc[0]
    return {m.step: m.value for m in client.get_metric_history(run["run_id"], "val_acc")}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, cats_dogs, mobilenet_weights) -> dict:
    """The real sweep, a FAILED job with a FAILED regime run and a still-RUNNING regime run, then the CLI report."""
    folder = tmp_path_factory.mktemp("report_sweep")
    store = store_uri(folder)
    proc = run_cli(
        "-m",
        "seed=0,1",
        f"unfreeze_at={','.join(BOUNDARIES)}",
        *small_mobilenet(mobilenet_weights, store, "study=rep", "regimes=[frozen,finetune]", "backbone.image_size=64"),
        '+targets.frozen=">= 0.6"',  # stated before the run: recorded on the sweep's parent run
        cwd=folder,
    )
    assert proc.returncode == 0, proc.log[-4000:]
    runs = search(store, "rep")
    sweep_id = runs.loc[runs["tags.run_kind"] == "sweep", "run_id"].item()
    frozen = runs[(runs["tags.regime"] == "frozen") & (runs["tags.unfreeze_at"] == BOUNDARIES[0])].iloc[0]
    client = mlflow.MlflowClient()
    experiment_id = frozen["experiment_id"]
    job = add_run(client, experiment_id, frozen, "FAILED", run_kind="job", seed="2", **{"mlflow.parentRunId": sweep_id})
    failed = add_run(client, experiment_id, frozen, "FAILED", seed="2", **{"mlflow.parentRunId": job})
    running = add_run(client, experiment_id, frozen, None, seed="3", **{"mlflow.parentRunId": job})

    proc = run_cli("study=rep", f"tracking_uri={store}", module="harness.report", cwd=folder)
    assert proc.returncode == 0, proc.log[-4000:]
    out = folder / "reports" / "rep"  # the default `out`, relative to the working directory
    return {
        "store": store,
        "sweep_id": sweep_id,
        "injected": {failed, running, job},
        "log": proc.log,
        "out": out,
        "csv": pd.read_csv(out / "results.csv"),
        "folder": folder,
    }


# ------------------------------------------------------------------------------------ the real sweep


@pytest.mark.slow
def test_csv_numbers_equal_what_the_store_holds(sweep):
    table = sweep["csv"]
    runs = search(sweep["store"], "rep")
    regimes = runs[(runs["tags.run_kind"] == "regime") & (runs["status"] == "FINISHED")]
    assert len(regimes) == 8 and not set(regimes["run_id"]) & sweep["injected"]
    assert list(table["unfreeze_at"]) == BOUNDARIES and list(table["config"]) == [1, 2]
    client = mlflow.MlflowClient()
    for _, row in table.iterrows():
        mine = regimes[regimes["params.unfreeze_at"] == row["unfreeze_at"]]
        for key, param in report.CONFIG_PARAMS.items():
            logged = str(row[key]) if pd.notna(row[key]) else "None"  # a null param (scratch.image_size)
            assert {logged} == set(mine[f"params.{param}"]), key
        for regime in ("frozen", "finetune"):
            r = mine[mine["tags.regime"] == regime]
            acc = r["metrics.test_acc"].to_numpy()
            assert row[f"{regime}_n"] == len(acc) == 2
            assert row[f"{regime}_seeds"] == "0,1"
            assert row[f"{regime}_test_acc_mean"] == pytest.approx(acc.mean(), rel=1e-12)
            assert row[f"{regime}_test_acc_std"] == pytest.approx(acc.std(ddof=1), rel=1e-12)
            # the interval counts the seeds and the 1,000 test images: the crossed test on the stored predictions
            table = np.array([stored_correct(r[r["tags.seed"] == s].run_id.item()).to_numpy() for s in ("0", "1")])
            crossed = stats.crossed_test(table)
            assert row[f"{regime}_test_images"] == 1000 and crossed["mean"] == pytest.approx(acc.mean())
            assert row[f"{regime}_test_acc_ci95_lo"] == pytest.approx(crossed["ci_lo"], rel=1e-9)
            assert row[f"{regime}_test_acc_ci95_hi"] == pytest.approx(crossed["ci_hi"], rel=1e-9)
            own = r[r.get("tags.head_phase", pd.Series("trained", index=r.index)).ne("reused")]  # reused: not here
            if own.empty:
                assert np.isnan(row[f"{regime}_train_time_s"])
            else:
                assert row[f"{regime}_train_time_s"] == pytest.approx(own["metrics.train_time_s"].mean(), rel=1e-12)
            # no stopping rule: the weights tested are the last epoch's; its validation accuracy, its epoch in the
            # phase (from 1; step -1 is the validation before training, epoch 0 of the head phase)
            histories = [history(client, runs, run) for _, run in r.iterrows()]
            if regime == "frozen":
                assert all(-1 in h for h in histories if h)
            trained = [{step: v for step, v in h.items() if step >= 0} for h in histories if h]
            assert row[f"{regime}_tested_val_acc"] == pytest.approx(np.mean([h[max(h)] for h in trained]), rel=1e-12)
            assert row[f"{regime}_tested_epoch"] == np.median([max(h) - min(h) + 1 for h in trained])
        assert row["scratch_n"] == 0 and np.isnan(row["scratch_test_acc_mean"])  # regime not run: still a row
        trained = mine[(mine["tags.regime"] == "frozen") & (mine["tags.head_phase"] == "trained")]
        assert row["frozen_head_phases_trained"] == len(trained)
        # the pair of a fine-tuned run is the frozen run of the same job
        by_job = mine.pivot(index="tags.mlflow.parentRunId", columns="tags.regime", values="metrics.test_acc")
        paired = sps.ttest_rel(by_job["finetune"], by_job["frozen"])
        diff = by_job["finetune"] - by_job["frozen"]
        assert row["ft_minus_frozen_n"] == 2
        assert row["ft_minus_frozen_mean"] == pytest.approx(diff.mean(), rel=1e-9, abs=1e-15)
        if np.ptp(diff) > 1e-12:  # accuracies are k/1000: equal gains differ only by float noise
            assert row["ft_minus_frozen_p"] == pytest.approx(paired.pvalue, rel=1e-9)
            assert row["ft_minus_frozen_t"] == pytest.approx(paired.statistic, rel=1e-9)
        else:
            assert np.isnan(row["ft_minus_frozen_p"])


def stored_correct(run_id: str) -> pd.Series:
    """One regime run's 0/1 outcome per test image, read back from its predictions/test.csv, by file name."""
    path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="predictions/test.csv")
    table = pd.read_csv(path).set_index("file")
    assert set(table.columns) >= {"label", "predicted", "correct", "p_dogs"}
    return table["correct"].sort_index()


@pytest.mark.slow
def test_comparisons_are_recomputed_from_the_predictions_each_run_stored(sweep):
    """Per configuration and pair of regimes: the crossed seeds x images test of the paired differences, McNemar per
    seed (scipy's binomial test), and Holm over the whole report, from predictions/test.csv read back independently;
    the same outcomes are in the results folder's correctness.csv.gz, so a re-analysis needs no store."""
    comparisons = pd.read_csv(sweep["out"] / "comparisons.csv", dtype={"seeds": str, "mcnemar_p": str})
    assert len(comparisons) == 2 and set(comparisons["comparison"]) == {"fine-tuned − frozen"}
    runs = search(sweep["store"], "rep")
    regimes = runs[(runs["tags.run_kind"] == "regime") & (runs["status"] == "FINISHED")]
    saved = report.read_correctness(sweep["out"])
    assert len(saved) == 8 * 1000 and set(saved["correct"]) <= {0, 1}

    for _, row in comparisons.iterrows():
        mine = regimes[regimes["params.unfreeze_at"] == row["unfreeze_at"]]
        a, b = (np.array([stored_correct(mine[(mine["tags.regime"] == r) & (mine["tags.seed"] == s)].run_id.item())
                          .to_numpy() for s in ("0", "1")]) for r in ("finetune", "frozen"))  # fmt: skip
        assert a.shape == (2, 1000) and row["images"] == 1000 and row["method"] == stats.CROSSED
        expected = stats.crossed_test(a - b)
        assert (row["mean"], row["ci_lo"], row["ci_hi"], row["p"], row["df"]) == pytest.approx(
            (expected["mean"], expected["ci_lo"], expected["ci_hi"], expected["p"], expected["df"])
        )
        mine_saved = saved[saved["unfreeze_at"] == row["unfreeze_at"]]
        again = [mine_saved[mine_saved["regime"] == r].pivot(index="seed", columns="file", values="correct")
                 for r in ("finetune", "frozen")]  # fmt: skip
        assert stats.crossed_test(again[0].to_numpy() - again[1].to_numpy())["p"] == pytest.approx(row["p"])
        exact = [sps.binomtest(int((x & ~y).sum()), int((x ^ y).sum()), 0.5).pvalue if (x ^ y).any() else 1.0
                 for x, y in zip(a.astype(bool), b.astype(bool), strict=True)]  # fmt: skip
        assert [float(v) for v in row["mcnemar_p"].split(",")] == pytest.approx(exact, rel=1e-2)
    assert comparisons["p_holm"].tolist() == pytest.approx(stats.holm(comparisons["p"].to_numpy()).tolist())


@pytest.mark.slow
def test_compare_tests_one_boundary_against_the_other_on_the_stored_predictions(sweep):
    """compare=unfreeze_at: per regime, the second boundary against the first, the crossed test over seeds and the
    same 1,000 test images recomputed from predictions/test.csv; Holm over these and the regime comparisons
    together. A key that does not vary is refused before anything is written."""
    out = sweep["folder"] / "by_boundary"
    common = ("study=rep", f"tracking_uri={sweep['store']}", "log_to_parent=false", "summary_runs=false")
    refused = run_cli(*common, f"out={out}", "compare=lr", module="harness.report", cwd=sweep["folder"])
    assert refused.returncode == 2 and "compare=lr: not a key whose value varies" in refused.log
    assert "allowed: unfreeze_at" in refused.log and "Traceback" not in refused.log and not out.exists()

    proc = run_cli(*common, f"out={out}", "compare=unfreeze_at", module="harness.report", cwd=sweep["folder"])
    assert proc.returncode == 0, proc.log[-3000:]
    by_key = pd.read_csv(out / "comparisons_by_key.csv", dtype=str)
    assert by_key[["regime", "unfreeze_at", "baseline"]].values.tolist() == [
        ["frozen", BOUNDARIES[1], BOUNDARIES[0]], ["finetune", BOUNDARIES[1], BOUNDARIES[0]]
    ]  # fmt: skip
    runs = search(sweep["store"], "rep")
    regimes = runs[(runs["tags.run_kind"] == "regime") & (runs["status"] == "FINISHED")]

    def correct(regime: str, boundary: str) -> np.ndarray:
        mine = regimes[(regimes["tags.regime"] == regime) & (regimes["params.unfreeze_at"] == boundary)]
        return np.array([stored_correct(mine[mine["tags.seed"] == s].run_id.item()).to_numpy() for s in ("0", "1")])

    for _, row in by_key.iterrows():
        expected = stats.crossed_test(correct(row["regime"], BOUNDARIES[1]) - correct(row["regime"], BOUNDARIES[0]))
        assert row["images"] == "1000" and row["method"] == stats.CROSSED
        got = [float(row[k]) for k in ("mean", "ci_lo", "ci_hi", "p")]
        # frozen does not depend on the boundary: no difference anywhere, no test (p NaN on both sides)
        assert got == pytest.approx([expected[k] for k in ("mean", "ci_lo", "ci_hi", "p")], nan_ok=True)
    comparisons = pd.read_csv(out / "comparisons.csv")
    family = np.concatenate([comparisons["p"], by_key["p"].astype(float)])
    adjusted = np.concatenate([comparisons["p_holm"], by_key["p_holm"].astype(float)])
    assert adjusted.tolist() == pytest.approx(stats.holm(family).tolist(), nan_ok=True)  # NaN: no test, not counted
    md = (out / "results.md").read_text()
    assert "### Comparisons across unfreeze_at" in md and f"{BOUNDARIES[1]} − {BOUNDARIES[0]}" in md


@pytest.mark.slow
def test_the_report_logs_one_summary_run_per_configuration_under_a_report_run(sweep):
    runs = search(sweep["store"], "rep")
    reports = runs[runs["tags.run_kind"] == "report"]
    summaries = runs[runs["tags.run_kind"] == "summary"]
    assert len(summaries) == 2 and set(summaries["tags.mlflow.parentRunId"]) <= set(reports["run_id"])
    assert set(summaries.status) == {"FINISHED"} and set(reports.status) == {"FINISHED"}
    for _, row in sweep["csv"].iterrows():
        summary = summaries[summaries["params.unfreeze_at"] == row["unfreeze_at"]].iloc[-1]
        for regime in ("frozen", "finetune"):
            assert summary[f"metrics.{regime}_test_acc_mean"] == pytest.approx(row[f"{regime}_test_acc_mean"])
            assert summary[f"metrics.{regime}_n"] == row[f"{regime}_n"]
        assert not np.isnan(summary["metrics.finetune_minus_frozen_p_holm"])
    assert "regime" not in set(summaries.get("tags.run_kind", ()))  # never taken for a training run


@pytest.mark.slow
def test_targets_stated_in_the_sweep_are_recorded_on_its_parent_and_judged_on_its_rows(sweep):
    runs = search(sweep["store"], "rep")
    parent = runs[runs["tags.run_kind"] == "sweep"].iloc[0]
    assert json.loads(parent["tags.targets"]) == {"frozen": ">= 0.6"}
    stated = json.loads((sweep["out"] / "targets.json").read_text())
    assert [s["targets"] for s in stated] == [{"frozen": ">= 0.6"}]
    assert sorted(c["unfreeze_at"] for c in stated[0]["configurations"]) == sorted(BOUNDARIES)
    md = (sweep["out"] / "results.md").read_text()
    section = md[md.index("### Targets stated before the run") :].split("\n\n### ")[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("|")]
    by_boundary = {row[0]: row for row in rows[2:]}
    for _, config in sweep["csv"].iterrows():
        row = by_boundary[config["unfreeze_at"]]
        mean, lo, hi = (100 * config[f"frozen_test_acc_{k}"] for k in ("mean", "ci95_lo", "ci95_hi"))
        assert row[1:] == [
            "frozen >= 0.6",
            f"{mean:.1f} [{lo:.1f}, {hi:.1f}]",
            "yes" if mean >= 60 else "no",
            "yes" if lo >= 60 else "no",
        ]


@pytest.mark.slow
def test_failed_and_unfinished_runs_are_left_out_and_counted(sweep):
    summary = json.loads((sweep["out"] / "summary.json").read_text())
    assert summary["left_out"] == {"FAILED": 1, "RUNNING": 1}
    assert summary["jobs"] == {"FINISHED": 4, "FAILED": 1}
    assert summary["used_regime_runs"] == 8 and summary["configurations"] == 2
    assert "left out, not FINISHED: 1 FAILED, 1 RUNNING" in sweep["log"]
    assert "used 8 finished regime run(s) in 2 configuration(s)" in sweep["log"]
    assert (sweep["csv"]["frozen_n"] == 2).all()  # seeds 2 (failed) and 3 (running) are not in the means


@pytest.mark.slow
def test_markdown_and_latex_are_well_formed(sweep):
    md = (sweep["out"] / "results.md").read_text()
    rows = [line for line in md[: md.index("### Comparisons")].splitlines() if line.startswith("|")]
    assert len(rows) == 2 + 2 * 2  # header, rule, two configurations x (frozen, fine-tuned)
    assert len({line.count("|") for line in rows}) == 1 and rows[0].count("|") - 1 <= 12
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert header[:2] == ["unfreeze_at", "regime"]  # the swept key; the constant ones in the caption
    assert "block_15_expand" in rows[2] and "block_16_expand" in rows[4]
    assert not any("scratch" in row for row in rows[2:])
    assert md.startswith("### Results\n\nEvery row: backbone=mobilenetv2") and "epochs_scratch" not in md
    assert re.fullmatch(r"\s*\d{1,3}\.\d ± \d{1,3}\.\d\s*", rows[2].split("|")[4])  # percent, one decimal
    assert sweep["log"].count(rows[0]) == 1  # the console shows the same table
    assert "### Comparisons" in md and "### Per class" in md

    tex = (sweep["out"] / "results.tex").read_text()
    assert tex.startswith("% needs \\usepackage{booktabs,graphicx}") and "\\end{tabular}" in tex
    body = tex[: tex.index("\\end{tabular}")]
    first = tex[: tex.index("\\end{table}")]  # the results table, \resizebox and caption included
    unescaped = re.sub(r"\\[{}]", "", first)
    assert unescaped.count("{") == unescaped.count("}")
    assert "block\\_15\\_expand" in body and "block_15" not in body  # underscores escaped
    lines = body.split("\\midrule\n")[1].split("\\bottomrule")[0].strip().splitlines()  # the results table
    header = body.split("\\midrule")[0].strip().splitlines()[-1]
    assert len(lines) == 4
    assert {len(re.findall(r"(?<!\\)&", line)) for line in [*lines, header]} == {header.count("&")}
    assert "test_acc_vs_data_fraction.png skipped: one data_fraction value" in sweep["log"]


@pytest.mark.slow
def test_figures_are_written_and_logged_to_the_parent_run(sweep):
    for name in FIGURES:
        assert (sweep["out"] / name).read_bytes()[:8] == PNG, name
    client = mlflow.MlflowClient(sweep["store"])
    logged = {Path(a.path).name for a in client.list_artifacts(sweep["sweep_id"], "report")}
    assert set(FIGURES) | {"results.csv", "results.md", "results.tex", "summary.json", "comparisons.csv"} <= logged
    downloaded = client.download_artifacts(sweep["sweep_id"], f"report/{FIGURES[2]}", str(sweep["folder"] / "dl"))
    assert Path(downloaded).read_bytes()[:8] == PNG
    assert f"report logged to parent run {sweep['sweep_id']}" in sweep["log"]


@pytest.mark.slow
def test_sweep_filter_follows_the_ledger(sweep, tmp_path):
    result = report.build_report(sweep["store"], "rep", sweep=sweep["sweep_id"], out=tmp_path, log_to_parent=False)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "results.csv"), sweep["csv"])
    assert result.summary["parent_run"] == sweep["sweep_id"] and result.summary["logged_to_run"] is None
    assert result.summary["sweep_ledger"] == {"finished": 4, "skipped_without_run_id": 0}

    # a later sweep that skipped jobs already FINISHED in the study: its ledger names them (or not)
    runs = search(sweep["store"], "rep")
    jobs = runs[(runs["tags.run_kind"] == "job") & (runs["status"] == "FINISHED")]
    reused = jobs[jobs["tags.unfreeze_at"] == BOUNDARIES[1]]["run_id"].tolist()
    ledger = {"job.0": f"skipped {reused[0]}", "job.1": f"skipped {reused[1]}", "job.2": "skipped"}
    client = mlflow.MlflowClient(sweep["store"])
    later = client.create_run(runs["experiment_id"].iloc[0], tags={"run_kind": "sweep", **ledger}).info.run_id
    client.set_terminated(later, "FINISHED")
    result = report.build_report(sweep["store"], "rep", sweep=later, out=tmp_path / "later", log_to_parent=False)
    assert list(result.table["unfreeze_at"]) == BOUNDARIES[1:] and result.table.loc[0, "finetune_n"] == 2
    assert result.summary["sweep_ledger"] == {"skipped": 3, "skipped_without_run_id": 1}
    assert "1 job(s) of this sweep were skipped as already FINISHED" in report.summary_text(result)
    with pytest.raises(HarnessError, match=r"sweep='0123' is not a sweep run of study 'rep'; its sweeps: "):
        report.load_runs(sweep["store"], "rep", sweep="0123")


# ---------------------------------------------------------------- scratch, n = 1, a run without a sweep


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> dict:
    """One offline quickstart job (no sweep) with scratch and frozen: one seed, no fine-tuning."""
    folder = tmp_path_factory.mktemp("report_quick")
    store = store_uri(folder)
    proc = run_cli("+experiment=quickstart", "regimes=[scratch,frozen]", f"tracking_uri={store}", cwd=folder)
    assert proc.returncode == 0, proc.log[-4000:]
    result = report.build_report(store, "quickstart", out=folder / "out")
    return {"store": store, "report": result, "out": folder / "out"}


@pytest.mark.slow
def test_single_seed_job_without_sweep(quick):
    table = pd.read_csv(quick["out"] / "results.csv")
    runs = search(quick["store"], "quickstart")
    scratch = runs[runs["tags.regime"] == "scratch"].iloc[0]
    assert len(table) == 1
    row = table.iloc[0]
    assert row["scratch_n"] == 1 and row["frozen_n"] == 1 and row["finetune_n"] == 0
    assert row["scratch_test_acc_mean"] == scratch["metrics.test_acc"]
    assert row[["scratch_test_acc_std", "scratch_test_acc_ci95_lo", "scratch_test_acc_ci95_hi"]].isna().all()
    assert row["ft_minus_frozen_n"] == 0 and np.isnan(row["ft_minus_frozen_p"])
    md = (quick["out"] / "results.md").read_text()
    rows = [line for line in md[: md.index("### Comparisons")].splitlines() if line.startswith("|")]
    assert len(rows) == 2 + 2 and "scratch" in rows[2] and "frozen" in rows[3] and "fine-tuned" not in md
    assert re.search(r"\|\s*single run\s*\|", rows[2])  # one seed: no interval, and it says so
    assert "unfreeze_at=" not in md and "epochs_finetune" not in md and "epochs_scratch=" in md  # no fine-tuning ran
    assert quick["report"].summary["parent_run"] is None  # no sweep: nothing to log to
    assert (quick["out"] / "val_acc_curves.png").read_bytes()[:8] == PNG


@pytest.mark.slow
def test_a_study_of_scratch_alone_reports_without_comparisons(quick, tmp_path):
    """Chollet's small-convnet baselines are a scratch-only study: no head phase, no comparison between regimes."""
    args = ("+experiment=quickstart", "regimes=[scratch]", "study=scratch_only", f"tracking_uri={quick['store']}")
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.log[-4000:]
    report.build_report(quick["store"], "scratch_only", out=tmp_path / "out")
    md = (tmp_path / "out" / "results.md").read_text()
    results = md.split("### ")[1]  # the first section: the per-regime table
    rows = [line for line in results.splitlines() if line.startswith("|")]
    assert results.startswith("Results") and len(rows) == 3 and "scratch" in rows[2]
    assert "### Comparisons" not in md and "### Per class" in md
    assert (tmp_path / "out" / "val_acc_curves.png").read_bytes()[:8] == PNG


# ----------------------------------------------------------------------------------- nothing to report


def test_no_finished_runs_is_a_clear_error(tmp_path):
    store = store_uri(tmp_path)
    (tmp_path / "mlruns").mkdir()
    mlflow.set_tracking_uri(store)
    client = mlflow.MlflowClient()
    experiment_id = client.create_experiment("dead", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(experiment_id, tags={"run_kind": "regime", "regime": "frozen", "seed": "0"})
    client.set_terminated(run.info.run_id, status="FAILED")

    proc = run_cli("study=dead", f"tracking_uri={store}", module="harness.report", cwd=tmp_path)
    assert proc.returncode == 2, proc.log[-2000:]
    assert "study 'dead' has no finished runs to report" in proc.log
    assert "left out, not FINISHED: 1 FAILED" in proc.log
    assert not (tmp_path / "reports").exists()

    with pytest.raises(HarnessError, match="study 'nope' does not exist .* studies there: .*dead"):
        report.build_report(store, "nope", out=tmp_path / "x")
    with pytest.raises(HarnessError, match="no MLflow store at"):
        report.build_report(store_uri(tmp_path / "elsewhere"), "dead", out=tmp_path / "x")
    assert not (tmp_path / "elsewhere").exists()  # a report never creates a store


# ------------------------------------------------------------------------ table logic on plain frames


def plain_runs(rows: list[dict]) -> pd.DataFrame:
    """Regime runs as `load_runs` returns them, written by hand (what the store would hold)."""
    base = {
        "status": "FINISHED",
        "run_kind": "regime",
        "parent_run_id": "job",
        "backbone": "mobilenetv2",
        "unfreeze_at": "block_2_expand",
        "lr": "1e-05",
        "head_lr": "0.0001",
        "data_fraction": "1.0",
        "augment": "False",
        "image_size": "160",
        "epochs_scratch": "1",
        "epochs_head": "1",
        "epochs_finetune": "1",
        "train_time_s": 1.0,
    }
    frame = pd.DataFrame([{**base, **r} for r in rows])
    frame["run_id"] = [f"r{i}" for i in range(len(frame))]
    frame["start_time"] = pd.to_datetime(range(len(frame)), unit="s")
    return frame


def test_rows_follow_network_order_and_reruns_count_once():
    layers = ["Conv_1", "block_15_expand", "block_2_expand", "Conv1"]  # alphabetical would be wrong
    runs = plain_runs(
        [{"unfreeze_at": u, "regime": "frozen", "seed": "0", "test_acc": 0.5} for u in layers]
        + [{"unfreeze_at": "Conv1", "regime": "frozen", "seed": "0", "test_acc": 0.9}]  # re-run, newer
        + [{"unfreeze_at": "Conv1", "regime": "frozen", "seed": "1", "test_acc": 0.7, "status": "KILLED"}]
    )
    table = report.summarize(runs)
    assert list(table["unfreeze_at"]) == ["Conv1", "block_2_expand", "block_15_expand", "Conv_1"]
    assert table.loc[0, "frozen_n"] == 1 and table.loc[0, "frozen_test_acc_mean"] == 0.9
    counts = report.run_counts(runs)
    assert counts["superseded_reruns"] == 1 and counts["left_out"] == {"KILLED": 1}


def test_other_varying_params_split_rows():
    runs = plain_runs(
        [
            {"regime": "frozen", "seed": s, "test_acc": a, "params.optimizer": o, "params.seed": s}
            for s, a, o in [("0", 0.8, "adam"), ("1", 0.9, "adam"), ("0", 0.6, "rmsprop")]
        ]
    )
    table = report.summarize(runs)
    assert list(table["optimizer"]) == ["adam", "rmsprop"] and list(table["frozen_n"]) == [2, 1]
    assert "optimizer" in report.row_keys_of(table) and "seed" not in report.row_keys_of(table)


def test_targets_and_runtime_settings_never_split_rows():
    """Two sweeps of one configuration that stated different targets (each judges its own) or ran with other
    threads: the same configuration, one row; targets are flattened params (targets.scratch) of a result-free key."""
    runs = plain_runs(
        [
            {"regime": "frozen", "seed": s, "test_acc": a, "params.targets.frozen": t, "params.threads": th}
            for s, a, t, th in [("0", 0.8, ">= 0.7", "None"), ("1", 0.9, ">= 0.8", "1")]
        ]
    )
    table = report.summarize(runs)
    assert len(table) == 1 and table.loc[0, "frozen_n"] == 2
    assert not [k for k in report.row_keys_of(table) if k.startswith("targets") or k == "threads"]


def test_a_key_no_regime_that_ran_uses_is_not_shown_unless_it_alone_separates_rows():
    """Chollet's two small convnets differ in augmentation and also in epochs.head, which a scratch-only study
    never runs: the table shows augment, not epochs_head; where epochs_head is all that differs, it stays."""
    from harness.report.tables import split_keys

    both = plain_runs(
        [
            {"regime": "scratch", "seed": "0", "test_acc": a, "augment": aug, "epochs_head": eh}
            for a, aug, eh in [(0.7, "False", "10"), (0.8, "True", "200")]
        ]
    )
    assert split_keys(report.summarize(both))[0] == ["augment"]
    alone = both.assign(augment="False")
    assert split_keys(report.summarize(alone))[0] == ["epochs_head"]


def test_paired_difference_and_interval_match_scipy():
    runs = plain_runs(
        [
            {"regime": regime, "seed": str(seed), "test_acc": acc, "parent_run_id": f"job{seed}"}
            for seed, (frozen, finetune) in enumerate([(0.80, 0.86), (0.82, 0.85), (0.79, 0.88)])
            for regime, acc in (("frozen", frozen), ("finetune", finetune))
        ]
    )
    row = report.summarize(runs).iloc[0]
    after, before = np.array([0.86, 0.85, 0.88]), np.array([0.80, 0.82, 0.79])
    expected = sps.ttest_rel(after, before)
    assert row["ft_minus_frozen_p"] == pytest.approx(expected.pvalue)
    assert row["ft_minus_frozen_t"] == pytest.approx(expected.statistic)
    lo, hi = sps.t.interval(0.95, 2, loc=(after - before).mean(), scale=sps.sem(after - before))
    assert (row["ft_minus_frozen_ci95_lo"], row["ft_minus_frozen_ci95_hi"]) == pytest.approx((lo, hi))
    lo, hi = sps.t.interval(0.95, 2, loc=after.mean(), scale=sps.sem(after))
    assert (row["finetune_test_acc_ci95_lo"], row["finetune_test_acc_ci95_hi"]) == pytest.approx((lo, hi))


def test_stats_undefined_below_two_values():
    one = stats.mean_ci([0.7])
    assert one["n"] == 1 and one["mean"] == 0.7 and np.isnan([one["std"], one["ci_lo"], one["ci_hi"]]).all()
    same = stats.paired_test([0.9, 0.8], [0.8, 0.7])  # identical differences: no spread, no test
    assert same["mean"] == pytest.approx(0.1) and same["std"] == 0 and np.isnan(same["p"])
    half = stats.t_half_width(pd.Series([0.1, 0.1, np.nan]), pd.Series([1, 4, 3]))
    assert np.isnan(half[0]) and half[1] == pytest.approx(sps.t.ppf(0.975, 3) * 0.1 / 2) and np.isnan(half[2])
