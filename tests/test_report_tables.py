"""The report's readable tables, the README splice, re-rendering from results.csv, and the report's defects.

Plain frames (regime runs as `load_runs` returns them) and small files; the CLI runs as a subprocess.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli
from test_report import plain_runs

from harness import report
from harness.report import evidence, plots, stats
from harness.report.tables import validation_at_tested_epoch

BEGIN = "<!-- begin results/results.md (generated: do not edit by hand) -->"
END = "<!-- end results/results.md -->"


def sweep_runs(fractions=("0.1", "1.0"), boundaries=("block_14_expand",), lrs=("1e-05",), seeds=(0, 1)) -> pd.DataFrame:
    """Frozen + finetune runs of a grid, distinct accuracies, one job per (configuration, seed)."""
    rows = []
    for i, (f, u, lr, seed) in enumerate(
        (f, u, lr, s) for f in fractions for u in boundaries for lr in lrs for s in seeds
    ):
        job = f"job{i}"
        base = {"data_fraction": f, "unfreeze_at": u, "lr": lr, "seed": str(seed), "parent_run_id": job}
        rows.append({**base, "regime": "frozen", "test_acc": 0.80 + 0.01 * i, "train_time_s": 60.0})
        rows.append({**base, "regime": "finetune", "test_acc": 0.85 + 0.013 * i, "train_time_s": 120.0})
    return plain_runs(rows)


def md_rows(md: str) -> list[str]:
    return [line for line in md.splitlines() if line.startswith("|")]


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


# ---------------------------------------------------------------------------------------------- tables


def markdown(table: pd.DataFrame, folder: Path | None = None) -> str:
    return report.render.to_markdown(
        report.analysis.sections(table, report.analysis.read(folder or Path("/nonexistent"), table))
    )


def test_results_have_a_row_per_configuration_and_regime_the_varying_keys_and_a_caption():
    table = report.summarize(sweep_runs())
    md = markdown(table)
    rows = md_rows(md[: md.index("### Comparisons")])
    header = cells(rows[0])
    assert header[:2] == ["data_fraction", "regime"]  # the varying key names the row; no internal number
    assert "unfreeze_at" not in header and "lr" not in header
    assert len(rows) == 2 + 2 * 2  # header, rule, 2 fractions x (frozen, fine-tuned)
    assert [cells(r)[1] for r in rows[2:]] == ["frozen", "fine-tuned"] * 2
    caption = md.splitlines()[2]
    assert caption.startswith("Every row: ") and "unfreeze_at=block_14_expand" in caption and "lr=1e-05" in caption
    assert "epochs_scratch" not in md  # no scratch regime ran: its epochs are nobody's setting
    fine = dict(zip(header, cells(rows[3]), strict=True))
    row = table.iloc[0]
    mean, sd = 100 * row["finetune_test_acc_mean"], 100 * row["finetune_test_acc_std"]
    assert fine["test acc % (mean ± sd)"] == f"{mean:.1f} ± {sd:.1f}"  # percent, one decimal everywhere
    lo, hi = 100 * row["finetune_test_acc_ci95_lo"], 100 * row["finetune_test_acc_ci95_hi"]
    assert fine["95% CI (seeds)"] == f"[{lo:.1f}, {hi:.1f}]"
    assert fine["train min"] == "2.0"


def test_a_single_run_is_never_given_an_interval_and_booleans_read_as_words():
    runs = sweep_runs(seeds=(0,))
    runs["augment"] = np.where(runs["data_fraction"] == "0.1", "True", "False")
    md = markdown(report.summarize(runs))
    rows = [dict(zip(cells(md_rows(md)[0]), cells(r), strict=True)) for r in md_rows(md)[2:6]]
    assert {r["95% CI (seeds)"] for r in rows} == {"single run"}
    assert {r["augment"] for r in rows} == {"yes", "no"} and "True" not in md
    assert "95% CI: none, one seed per configuration" in md and "no per-image outcomes" not in md


def test_the_interval_counts_the_test_images_where_every_seed_logged_predictions():
    """A configuration whose seeds all have per-image outcomes gets the crossed seeds x images interval (wider than
    the seeds' own when the test images matter); one without keeps the seeds' interval, marked (seeds)."""
    from harness.report import evidence as ev

    runs = sweep_runs(seeds=(0, 1, 2))
    finished = report.runs.finished_runs(runs)
    keys = report.runs.row_keys(finished)
    rng = np.random.default_rng(0)
    hard = rng.random(200) < 0.2
    some = finished[finished["data_fraction"] == "0.1"]
    predictions = pd.concat(
        [pd.DataFrame({"run_id": run_id, "file": [f"f{i}.jpg" for i in range(200)], "label": "a", "predicted": "a",
                       "correct": (rng.random(200) < np.where(hard, 0.5, 0.97)).astype(int)})
         for run_id in some["run_id"]]
    )  # fmt: skip
    intervals = ev.regime_intervals(finished, predictions, keys)
    table = report.summarize(runs, intervals=intervals)
    crossed, seeds_only = (table[table["data_fraction"] == f].iloc[0] for f in ("0.1", "1.0"))
    assert crossed["frozen_test_images"] == 200 and np.isnan(seeds_only["frozen_test_images"])
    frozen = some[some["regime"] == "frozen"].sort_values("seed")["run_id"]
    outcomes = np.array([predictions[predictions["run_id"] == r]["correct"].to_numpy() for r in frozen])
    expected = stats.crossed_test(outcomes)
    assert (crossed["frozen_test_acc_ci95_lo"], crossed["frozen_test_acc_ci95_hi"]) == pytest.approx(
        (expected["ci_lo"], expected["ci_hi"])
    )
    md = markdown(table)
    assert "95% CI: the crossed t interval over seeds and test images where every seed" in md and " (seeds)" in md


def test_comparisons_read_in_points_with_real_minus_signs_and_short_p_values():
    from harness.report.render import comparisons_section, p_value, points

    assert (points(0.004), points(-0.0123), p_value(0.00042), p_value(0.04123), p_value(0.5)) == (
        "+0.4", "−1.2", "0.00042", "0.041", "0.5",
    )  # fmt: skip
    crossed = {"data_fraction": "0.1", "comparison": "fine-tuned − frozen", "n": 3, "images": 1000, "mean": -0.012,
               "ci_lo": -0.02, "ci_hi": -0.004, "p": 3.1e-5, "p_holm": 6.2e-5, "method": stats.CROSSED,
               "mcnemar_p": "0.01,0.2,0.5", "seeds_for_80pct_power": 4.0}  # fmt: skip
    section = comparisons_section(pd.DataFrame([crossed]), ["data_fraction"])
    row = section.frame.iloc[0]
    assert row["Δ points [95% CI]"] == "−1.2 [−2.0, −0.4]" and row["p"] == "3.1e-05" and row["p (Holm)"] == "6.2e-05"
    assert row["seeds"] == "3 x 1000 images" and row["test"] == "crossed t" and row["seeds for 80% power"] == "4"
    assert row["McNemar p per seed"] == "0.01, 0.2, 0.5"  # the CSV's comma list, readable in the table
    notes = " ".join(section.notes)
    assert "Holm's step-down over the one comparison of this report" in notes
    assert "paired by seed (the same job) and by test image. crossed t: the seeds x test images table" in notes
    assert "paired t:" not in notes and "bootstrap:" not in notes  # only the tests the table uses are described


def test_a_recorded_bootstrap_p_at_its_resampling_floor_is_printed_as_a_bound():
    """A bootstrap p of 2/10,001 says that no resample crossed 0, not that p is below 0.001; its Holm-adjusted p is
    an upper bound too. Above the floor, the p-value prints as it is."""
    from harness.report.render import comparisons_section

    floor = {"unfreeze_at": "b", "comparison": "fine-tuned − frozen", "n": 3, "images": 1000, "mean": 0.08,
             "ci_lo": 0.05, "ci_hi": 0.11, "p": 2 / 10_001, "p_holm": 4 / 10_001, "method": evidence.BOOTSTRAP,
             "mcnemar_p": "", "seeds_for_80pct_power": np.inf}  # fmt: skip
    above = {**floor, "p": 0.004, "p_holm": 0.004, "seeds_for_80pct_power": 3.0}
    frame = comparisons_section(pd.DataFrame([floor, above]), ["unfreeze_at"]).frame
    assert frame["p"].tolist() == ["≤ 2e-4 (the resampling floor)", "0.004"]
    assert frame["p (Holm)"].tolist() == ["≤ 0.0004", "0.004"] and frame["seeds for 80% power"].tolist() == ["∞", "3"]


def test_latex_is_one_table_per_section_with_caption_label_booktabs_and_real_minus():
    table = report.summarize(sweep_runs(boundaries=("block_14_expand", "block_15_expand")))
    tex = report.to_latex(report.analysis.sections(table, report.analysis.read(Path("/nonexistent"), table)), "x")
    assert tex.startswith("% needs \\usepackage{booktabs,graphicx}")
    assert tex.count("\\begin{table}[t]") == tex.count("\\end{table}") == 2  # results and comparisons
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert "\\label{tab:x-results}" in tex and "\\label{tab:x-comparisons}" in tex
    assert "\\caption{Results. Every row: " in tex and "\\resizebox{\\columnwidth}{!}" in tex
    body = tex[: tex.index("\\end{tabular}")]
    assert "block\\_14\\_expand" in body and "block_14" not in body and "$\\pm$" in body and "95\\% CI" in body
    assert "−" not in tex  # every minus sign is LaTeX's: $-$
    wide = report.to_latex(
        report.analysis.sections(table, report.analysis.read(Path("/nonexistent"), table)), wide=True
    )
    assert "\\begin{table*}" in wide and "\\resizebox{\\textwidth}" in wide


# ------------------------------------------------------------------------------------------ from_csv


def test_from_csv_renders_the_same_tables(tmp_path):
    table = report.summarize(sweep_runs())
    table.to_csv(tmp_path / "results.csv", index=False)
    back = report.read_table(tmp_path / "results.csv")
    assert markdown(back, tmp_path) == markdown(table, tmp_path)
    assert back["lr"].tolist() == ["1e-05"] * 2  # the logged strings, not floats


def test_a_results_csv_recorded_before_comparisons_renders_with_its_paired_t_test(tmp_path):
    """The recorded studies' results.csv (best epoch of the seed-mean curve, the fine-tuned − frozen paired t-test)
    re-render without the store: their own columns and test, named as such; no per-image comparison invented."""
    recorded = Path(__file__).resolve().parents[1] / "experiments" / "tf_mobilenetv2" / "results" / "results.csv"
    (tmp_path / "results.csv").write_bytes(recorded.read_bytes())
    report.render_from_csv(tmp_path / "results.csv")
    md = (tmp_path / "results.md").read_text()
    assert "best val acc % (epoch)" in md and "this results.csv's own" in md
    assert "| paired t |" in md.replace("  ", " ").replace("  ", " ") or "paired t" in md
    assert "bootstrap |" not in md and "### Comparisons" in md
    assert "paired by seed (the same job). paired t:" in md and "no McNemar" in md and "by test image" not in md


# ---------------------------------------------------------------------------------------------- splice


def readme(folder: Path, body: str) -> Path:
    (folder / "results").mkdir(parents=True, exist_ok=True)
    report.summarize(sweep_runs()).to_csv(folder / "results" / "results.csv", index=False)
    path = folder / "README.md"
    path.write_text(body, encoding="utf-8")
    return path


def test_readme_splice_replaces_only_its_block(tmp_path):
    path = readme(
        tmp_path,
        f"# x\n\n{BEGIN}\nold table\n{END}\n\n<!-- begin other/results.md -->\nkeep\n<!-- end other/results.md -->\n",
    )
    proc = run_cli(
        f"from_csv={tmp_path / 'results' / 'results.csv'}", f"readme={path}", module="harness.report", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.log[-3000:]
    text = path.read_text()
    md = (tmp_path / "results" / "results.md").read_text()
    assert f"{BEGIN}\n{md}{END}\n" in text and "old table" not in text and "\nkeep\n" in text
    assert (tmp_path / "results" / "results.tex").read_text().startswith("% needs \\usepackage{booktabs,graphicx}")


@pytest.mark.parametrize("body", ["# no markers\n", f"{BEGIN}\nno end marker\n", None])
def test_readme_without_markers_is_exit_2_and_writes_nothing(tmp_path, body):
    path = readme(tmp_path, body or "")
    if body is None:
        path.unlink()
    proc = run_cli(
        f"from_csv={tmp_path / 'results' / 'results.csv'}", f"readme={path}", module="harness.report", cwd=tmp_path
    )
    assert proc.returncode == 2, proc.log[-3000:]
    assert "Traceback" not in proc.log and "nothing written" in proc.log
    assert ("no such file" if body is None else "<!-- end results/results.md -->' markers") in proc.log
    assert not (tmp_path / "results" / "results.md").exists()
    if body is not None:
        assert path.read_text() == body


# --------------------------------------------------------------------------------------------- defects


def test_frozen_time_counts_only_head_phases_these_runs_trained():
    runs = sweep_runs(fractions=("1.0",), boundaries=("block_14_expand", "block_15_expand"))
    frozen = runs["regime"] == "frozen"
    runs["tags.head_phase"] = np.where(frozen, "trained", None)
    runs.loc[frozen & (runs["unfreeze_at"] == "block_15_expand"), ["tags.head_phase", "train_time_s"]] = [
        "reused",
        600.0,
    ]
    runs.loc[frozen & (runs["unfreeze_at"] == "block_14_expand") & (runs["seed"] == "1"), "train_time_s"] = 30.0
    table = report.summarize(runs)
    assert table["frozen_train_time_s"].iloc[0] == 45.0  # the reused 600 s were spent by another run
    assert np.isnan(table["frozen_train_time_s"].iloc[1])  # every head phase reused: no time of its own
    assert table["frozen_head_phases_trained"].tolist() == [2, 0]
    md = markdown(table)
    assert "reused cached ones left out" in md
    assert [cells(r)[-1] for r in md_rows(md[: md.index("### Comparisons")])[2:]] == ["0.8", "2.0", "–", "2.0"]


def empty_curves() -> pd.DataFrame:
    return pd.DataFrame(columns=["run_id", "step", "val_acc", "source_run_id"])


def test_summary_figures_with_one_x_value_are_skipped_and_logged(tmp_path, caplog):
    table = report.summarize(sweep_runs())  # two fractions, one boundary
    (tmp_path / plots.FIGURE_UNFREEZE).write_bytes(b"stale")
    finished = report.tables.finished_runs(sweep_runs())
    comparisons = report.analysis.read(tmp_path, table).comparisons
    with caplog.at_level("INFO", logger="harness.report"):
        written = plots.write_figures(table, comparisons, finished, empty_curves(), tmp_path)
    names = {p.name for p in written}
    assert plots.FIGURE_FRACTION in names and plots.FIGURE_UNFREEZE not in names
    assert "val_acc_curves_data_fraction-0.1.png" in names  # named by what varies, not by a number
    assert not (tmp_path / plots.FIGURE_UNFREEZE).exists()  # a stale one would be mistaken for this study's
    assert "test_acc_vs_unfreeze_at.png skipped: 1 unfreeze_at value(s) per backbone" in caplog.text


def test_summary_figures_show_the_difference_on_its_own_axis_legends_inside_constants_below():
    runs = sweep_runs(fractions=("0.1", "1.0"), boundaries=("block_14_expand", "block_15_expand"))
    table = report.summarize(runs)
    comparisons = report.analysis.read(Path("/nonexistent"), table).comparisons  # the recorded paired t
    fig = plots.unfreeze_figure(table, comparisons)
    accuracy, difference = fig.axes[0], fig.axes[1]
    legend = accuracy.get_legend()
    fig.canvas.draw()
    inside = accuracy.get_window_extent()
    box = legend.get_window_extent()
    assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1
    assert len({h.get_linestyle() for h in legend.legend_handles}) == 2  # one style per fraction
    drawn = [c for c in difference.containers if c.get_label().startswith("fine-tuned − frozen")]
    assert len(drawn) == 2 and difference.get_ylabel() == "Δ test acc (points)"
    expected = 100 * comparisons[comparisons["data_fraction"] == "0.1"]["mean"].to_numpy()
    assert list(drawn[0].lines[0].get_ydata()) == pytest.approx(expected)
    assert any("unfreeze" not in t.get_text() and "lr=1e-05" in t.get_text() for t in fig.texts)  # the caption
    assert len(accuracy.get_title().splitlines()) == 1
    plots.close(fig)


def test_the_fraction_figure_names_the_training_images_and_the_seeds():
    runs = sweep_runs(fractions=("0.1", "1.0"))
    table = report.summarize(runs)
    comparisons = report.analysis.read(Path("/nonexistent"), table).comparisons
    fig = plots.fraction_figure(table, comparisons, {"0.1": 200, "1": 2000})
    top = fig.axes[0].child_axes[0] if fig.axes[0].child_axes else None
    labels = [t.get_text() for t in top.get_xticklabels()] if top is not None else []
    assert labels == ["200", "2000"] and "n = 2 seeds" in fig.axes[0].get_title()
    plots.close(fig)
    unfinished = pd.concat([sweep_runs(fractions=("0.1",), seeds=(0, 1, 2)), sweep_runs(fractions=("1.0",))])
    unfinished["run_id"] = [f"u{i}" for i in range(len(unfinished))]
    fig = plots.fraction_figure(report.summarize(unfinished), comparisons, {"0.1": 200, "1": 2000})
    assert "n = 2-3 seeds" in fig.axes[0].get_title()  # not the largest count alone
    plots.close(fig)


def test_a_step_budget_hides_the_epochs_keys_it_overrode():
    from harness.report.tables import decided_by_budget

    assert decided_by_budget("steps head 630, finetune 126") == {"epochs_head", "epochs_finetune"}
    assert decided_by_budget("epochs") == set()


def two_seeds_with_ragged_heads() -> tuple[pd.DataFrame, pd.DataFrame]:
    """A stopping rule ended seed 0's head after 3 epochs, seed 1's after 5; each phase starts with epoch 0."""
    finished = pd.DataFrame(
        {"run_id": ["f0", "t0", "f1", "t1"], "regime": ["frozen", "finetune"] * 2, "seed": ["0", "0", "1", "1"],
         "backbone": "mobilenetv2", "best_epoch": [2, 3, 3, 6], "restored": [True, True, True, True]}
    )  # fmt: skip
    acc = {"f0": [0.50, 0.80, 0.90, 0.92], "f1": [0.52, 0.70, 0.80, 0.94, 0.99, 0.99], "t0": [0.95, 0.93],
           "t1": [0.91, 0.97, 0.99]}  # fmt: skip
    start = {"f0": -1, "f1": -1, "t0": 3, "t1": 5}  # step -1: the validation before the first epoch
    curves = pd.DataFrame(
        [(run, start[run] + i, a) for run, values in acc.items() for i, a in enumerate(values)],
        columns=["run_id", "step", "val_acc"],
    )
    return finished, curves


def test_the_tested_epoch_is_the_restored_one_counted_within_its_phase():
    finished, curves = two_seeds_with_ragged_heads()
    tested = validation_at_tested_epoch(finished, curves, ["backbone"])
    # frozen: seed 0 restored step 2 (its 3rd epoch, 0.92), seed 1 step 3 (4th, 0.99): mean 0.955, median 3.5 -> 4
    assert tested.loc[("mobilenetv2", "frozen")].tolist() == pytest.approx([0.955, 4])
    # fine-tuned: seed 0 restored step 3 (1st fine-tuning epoch, 0.95), seed 1 step 6 (2nd, 0.97)
    assert tested.loc[("mobilenetv2", "finetune")].tolist() == pytest.approx([0.96, 2])
    unrestored = finished.assign(restored=False)  # rule off: the last epoch's weights were tested
    assert validation_at_tested_epoch(unrestored, curves, ["backbone"]).loc[
        ("mobilenetv2", "frozen")
    ].tolist() == pytest.approx([(0.92 + 0.99) / 2, 4])


def test_comparisons_list_configurations_in_the_results_tables_order():
    from harness.report.analysis import in_table_order
    from harness.report.evidence import comparisons, load_predictions
    from harness.report.runs import finished_runs

    runs = sweep_runs(fractions=("1.0", "0.1", "0.25"))  # recorded in another order than the study's
    table = report.summarize(runs)
    assert table["data_fraction"].tolist() == ["0.1", "0.25", "1.0"]
    ordered = in_table_order(finished_runs(runs), table)
    no_predictions = load_predictions(ordered.iloc[:0])
    found = comparisons(ordered, no_predictions, ["data_fraction"])
    assert found["data_fraction"].tolist() == ["0.1", "0.25", "1.0"]
    assert len(ordered) == len(runs) and set(ordered["run_id"]) == set(runs["run_id"])


def test_curves_align_fine_tuning_on_each_seeds_own_start_and_smooth_each_phase_apart():
    finished, curves = two_seeds_with_ragged_heads()
    fig = plots.curves_figure(finished, curves, "title", {"backbone": "mobilenetv2"})
    raw, smoothed = fig.axes
    means = {line.get_label(): line for line in raw.lines if "mean of" in line.get_label()}
    tuned = means["fine-tuned, mean of 2 seeds"]
    # mean head length (3 + 5) / 2 = 4: fine-tuning epochs 1 and 2 of both seeds, at x = 5 and 6
    assert list(tuned.get_xdata()) == [5, 6] and list(tuned.get_ydata()) == pytest.approx([0.93, 0.95])
    frozen = means["frozen, mean of 2 seeds"]
    assert list(frozen.get_xdata()) == [0, 1, 2, 3] and frozen.get_ydata()[0] == pytest.approx(0.51)  # epoch 0
    smooth_tuned = [line for line in smoothed.lines if line.get_label() == "fine-tuned, mean of 2 seeds"][0]
    assert smooth_tuned.get_ydata()[0] == pytest.approx(0.93)  # smoothing restarts: no carry-over from the head
    smooth_frozen = [line for line in smoothed.lines if line.get_label() == "frozen, mean of 2 seeds"][0]
    # epoch 0 as measured (0.51); the smoothing starts at epoch 1 (0.75), not seeded with the untrained point
    assert list(smooth_frozen.get_ydata()[:3]) == pytest.approx([0.51, 0.75, 0.8 * 0.75 + 0.2 * 0.85])
    assert raw.get_xlim() == smoothed.get_xlim()
    plots.close(fig)


def test_a_small_convnet_baseline_lists_only_the_settings_it_used():
    """Chollet's small convnet trained alone: no backbone was built and it has no BatchNorm, so neither is given
    as the rows' setting; with the backbone-architecture control both are, and with one regime no comparison
    is promised."""
    rows = [{"regime": "scratch", "seed": str(s), "test_acc": 0.7 + 0.01 * s, "scratch_size": "150",
             "scratch_bn_momentum": "0.9"} for s in (0, 1, 2)]  # fmt: skip
    convnet = markdown(report.summarize(plain_runs([{**r, "scratch_model": "small_convnet"} for r in rows])))
    caption = convnet.splitlines()[2]
    assert "scratch_model=small_convnet" in caption and "scratch_size=150" in caption
    assert "backbone=" not in caption and "bn_momentum" not in caption
    assert "comparisons below" not in convnet
    control = markdown(report.summarize(plain_runs([{**r, "scratch_model": "backbone"} for r in rows])))
    assert "backbone=mobilenetv2" in control.splitlines()[2] and "scratch_bn_momentum=0.9" in control.splitlines()[2]


def test_each_sweeps_targets_are_judged_on_the_configurations_it_ran():
    """Chollet's small convnet without augmentation (stated >= 0.70) and, in a later sweep of the same study, with
    it (stated >= 0.80): each target is judged on its own sweep's row, and neither reads as a changed target."""
    from harness.report import analysis as analysis_module
    from harness.report.tables import row_keys_of

    regimes = [
        {"regime": "scratch", "seed": str(s), "augment": augment, "test_acc": acc + 0.005 * s, "parent_run_id": job}
        for augment, acc, job in (("False", 0.70, "job_a"), ("True", 0.81, "job_b"))
        for s in (0, 1, 2)
    ]
    runs = plain_runs(regimes)
    runs["parent_run_id"] = [f"{r['parent_run_id']}{r['seed']}" for r in regimes]
    stated = {"sweep_a": '{"scratch": ">= 0.70"}', "sweep_b": '{"scratch": ">= 0.80"}'}
    parents = pd.DataFrame(
        [{"run_id": sweep, "run_kind": "sweep", "tags.targets": text, "status": "FINISHED"} for sweep, text in
         stated.items()]
        + [{"run_id": f"job_{x}{s}", "run_kind": "job", "parent_run_id": f"sweep_{x}", "status": "FINISHED"}
           for x in "ab" for s in (0, 1, 2)]
    )  # fmt: skip
    parents["start_time"] = pd.to_datetime(range(len(parents)), unit="s")
    runs = pd.concat([parents, runs], ignore_index=True)
    table = report.summarize(runs)
    recorded = report.targets.recorded(runs, row_keys_of(table))
    assert [r["targets"] for r in recorded] == [{"scratch": ">= 0.70"}, {"scratch": ">= 0.80"}]
    assert [[c["augment"] for c in r["configurations"]] for r in recorded] == [["False"], ["True"]]
    found = analysis_module.Analysis(pd.DataFrame(), targets=recorded)
    md = report.render.to_markdown(analysis_module.sections(table, found))
    section = md[md.index("### Targets") :]
    judged = [cells(r) for r in md_rows(section)[2:]]
    assert judged == [["no", "scratch >= 0.7", "70.5 [69.3, 71.7]", "yes", "no"],
                      ["yes", "scratch >= 0.8", "81.5 [80.3, 82.7]", "yes", "yes"]]  # fmt: skip
    assert "changed between runs" not in section and "Each sweep's targets are judged" in section


# ------------------------------------------------------------------------------------ compare=<key>


def test_compare_pairs_each_value_of_a_key_with_its_baseline_regime_by_regime_and_adjusts_all_together(tmp_path):
    """compare=lr on a grid of two learning rates and two fractions: per fraction and regime, each lr against the
    baseline, paired by seed (no predictions here: the paired t-test of the seeds' accuracies, checked with scipy);
    Holm over the regime comparisons and these together; the CSV re-renders the same tables."""
    import scipy.stats as sps

    from harness.report import analysis, stats

    runs = sweep_runs(lrs=("1e-05", "1e-04"), seeds=(0, 1, 2))
    runs["test_acc"] += np.random.default_rng(0).normal(0, 0.01, len(runs))  # seeds that differ unequally
    table = report.summarize(runs)
    found = analysis.analyse(runs, report.runs.finished_runs(runs), table, "holm", "lr", "1e-04")
    by_key = found.by_key
    assert by_key[["data_fraction", "regime", "lr", "baseline"]].values.tolist() == [
        ["0.1", "frozen", "1e-05", "1e-04"], ["0.1", "finetune", "1e-05", "1e-04"],
        ["1.0", "frozen", "1e-05", "1e-04"], ["1.0", "finetune", "1e-05", "1e-04"],
    ]  # fmt: skip
    for _, row in by_key.iterrows():
        mine = runs[(runs["data_fraction"] == row["data_fraction"]) & (runs["regime"] == row["regime"])]
        a, b = (mine[mine["lr"] == lr].sort_values("seed")["test_acc"].to_numpy() for lr in ("1e-05", "1e-04"))
        lo, hi = sps.t.interval(0.95, 2, loc=(a - b).mean(), scale=sps.sem(a - b))
        assert row["method"] == "paired t (seeds)" and row["n"] == 3 and row["seeds"] == "0,1,2"
        assert (row["mean"], row["ci_lo"], row["ci_hi"]) == pytest.approx(((a - b).mean(), lo, hi))
        assert row["p"] == pytest.approx(sps.ttest_rel(a, b).pvalue)
    family = np.concatenate([found.comparisons["p"], by_key["p"]])
    assert len(family) == 4 + 4  # fine-tuned − frozen in each of the four configurations, then these four
    assert np.concatenate([found.comparisons["p_holm"], by_key["p_holm"]]).tolist() == pytest.approx(
        stats.holm(family).tolist()
    )
    md = report.render.to_markdown(analysis.sections(table, found))
    section = md[md.index("### Comparisons across lr") :]
    assert cells(md_rows(section)[0])[:3] == ["data_fraction", "regime", "lr"]
    assert cells(md_rows(section)[2])[:3] == ["0.1", "frozen", "1e-05 − 1e-04"]
    assert "over the 8 comparisons" in md and md.count("over the 8 comparisons") == 2

    table.to_csv(tmp_path / "results.csv", index=False)
    found.write(tmp_path)
    assert (tmp_path / "comparisons_by_key.csv").is_file()
    back = report.read_table(tmp_path / "results.csv")
    assert report.render.to_markdown(analysis.sections(back, analysis.read(tmp_path, back))) == md


def test_compare_across_a_key_that_changed_with_others_pairs_the_configurations_and_says_so(tmp_path):
    """Two protocols that differ in more than the compared key (Chollet's two models: augmentation, batch size and
    epochs): the keys that changed only with it do not split the pairs; their cells read "value − baseline's value"
    and a note names them, in the tables and re-rendered from the CSV."""
    import scipy.stats as sps

    from harness.report import analysis

    grid = sweep_runs(fractions=("0.1", "1.0"), lrs=("1e-05", "1e-04"), seeds=(0, 1, 2))
    runs = grid[(grid["lr"] == "1e-05") == (grid["data_fraction"] == "0.1")].reset_index(drop=True)
    runs["test_acc"] += np.random.default_rng(1).normal(0, 0.01, len(runs))
    table = report.summarize(runs)
    found = analysis.analyse(runs, report.runs.finished_runs(runs), table, "holm", "lr", "1e-04")
    by_key = found.by_key
    assert by_key[["data_fraction", "regime", "lr", "also_differs"]].values.tolist() == [
        ["0.1 − 1.0", "frozen", "1e-05", "data_fraction"], ["0.1 − 1.0", "finetune", "1e-05", "data_fraction"],
    ]  # fmt: skip
    for _, row in by_key.iterrows():
        mine = runs[runs["regime"] == row["regime"]]
        a, b = (mine[mine["lr"] == lr].sort_values("seed")["test_acc"].to_numpy() for lr in ("1e-05", "1e-04"))
        assert row["mean"] == pytest.approx((a - b).mean()) and row["p"] == pytest.approx(sps.ttest_rel(a, b).pvalue)
    md = report.render.to_markdown(analysis.sections(table, found))
    section = md[md.index("### Comparisons across lr") :]
    assert cells(md_rows(section)[2])[:3] == ["0.1 − 1.0", "frozen", "1e-05 − 1e-04"]
    assert "data_fraction: changed together with lr in these runs" in section

    table.to_csv(tmp_path / "results.csv", index=False)
    found.write(tmp_path)
    back = report.read_table(tmp_path / "results.csv")
    assert report.render.to_markdown(analysis.sections(back, analysis.read(tmp_path, back))) == md

    crossed = sweep_runs(lrs=("1e-05", "1e-04"))  # every lr with every fraction: nothing changed along with lr
    crossed_table = report.summarize(crossed)
    plain = analysis.analyse(crossed, report.runs.finished_runs(crossed), crossed_table, "holm", "lr", "1e-04")
    assert set(plain.by_key["also_differs"]) == {""} and set(plain.by_key["data_fraction"]) == {"0.1", "1.0"}


def test_compare_with_nothing_to_pair_says_so(caplog):
    """Each lr ran on other seeds than the baseline's: no pair, no table, and a warning instead of silence."""
    from harness.report import analysis

    runs = sweep_runs(fractions=("1.0",), lrs=("1e-05", "1e-04"), seeds=(0, 1, 2, 3))
    runs = runs[(runs["lr"] == "1e-04") == runs["seed"].isin(["0", "1"])].reset_index(drop=True)
    table = report.summarize(runs)
    with caplog.at_level("WARNING", logger="harness.report"):
        found = analysis.analyse(runs, report.runs.finished_runs(runs), table, "holm", "lr", "1e-04")
    assert found.by_key.empty
    assert "compare=lr: no run with lr=1e-04 shares its regime, its other settings and a seed" in caplog.text


def test_compare_names_what_it_allows_before_anything_is_computed():
    from harness.errors import HarnessError
    from harness.report.analysis import check_compare

    table = report.summarize(sweep_runs(lrs=("1e-05", "1e-04")))
    assert check_compare(table, "lr", None) == "1e-05"  # the first value in the results table
    assert check_compare(table, None, None) is None
    constant = r"compare=unfreeze_at: not a key whose value varies .* allowed: lr, data_fraction$"
    with pytest.raises(HarnessError, match=constant):
        check_compare(table, "unfreeze_at", None)  # constant in this grid
    with pytest.raises(HarnessError, match=r"compare_baseline=3e-04: not a value of lr; its values: 1e-05, 1e-04"):
        check_compare(table, "lr", "3e-04")
    with pytest.raises(HarnessError, match="compare_baseline=1e-04 needs compare=<key>"):
        check_compare(table, None, "1e-04")
