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
from harness.report import plots
from harness.report.render import MAX_COLUMNS
from harness.report.tables import best_validation

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


# ----------------------------------------------------------------------------------------- long table


def test_long_table_has_a_row_per_configuration_and_regime_and_a_caption():
    table = report.summarize(sweep_runs())
    md = report.to_markdown(table)
    rows = md_rows(md)
    header = cells(rows[0])
    assert header[:3] == ["config", "data_fraction", "regime"]  # only the varying key is a column
    assert len(header) <= MAX_COLUMNS and "unfreeze_at" not in header and "lr" not in header
    assert len(rows) == 2 + 2 * 2  # header, rule, 2 fractions x (frozen, fine-tuned)
    assert [cells(r)[2] for r in rows[2:]] == ["frozen", "fine-tuned"] * 2
    caption = md.splitlines()[0]
    assert caption.startswith("Every row: ") and "unfreeze_at=block_14_expand" in caption and "lr=1e-05" in caption
    assert "epochs_scratch" not in md  # no scratch regime ran: its epochs are nobody's setting
    fine = dict(zip(header, cells(rows[3]), strict=True))
    row = table.iloc[0]
    assert fine["test acc (mean ± sd)"] == f"{row['finetune_test_acc_mean']:.3f} ± {row['finetune_test_acc_std']:.3f}"
    lo, hi = row["ft_minus_frozen_ci95_lo"], row["ft_minus_frozen_ci95_hi"]
    assert fine["Δ vs frozen [95% CI]"] == f"{row['ft_minus_frozen_mean']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
    assert fine["train min"] == "2.00" and dict(zip(header, cells(rows[2]), strict=True))["Δ vs frozen [95% CI]"] == ""


def test_many_varying_keys_fold_into_one_column_within_the_limit():
    runs = sweep_runs(
        fractions=("0.1", "1.0"), boundaries=("block_14_expand", "block_15_expand"), lrs=("1e-05", "1e-04")
    )
    runs["augment"] = np.where(runs.index % 8 < 4, "True", "False")
    runs["head_lr"] = np.where(runs.index % 16 < 8, "0.001", "0.0001")
    table = report.summarize(runs)
    assert len(report.split_keys(table)[0]) == 5
    long = report.long_table(table)
    assert long.frame.shape[1] <= MAX_COLUMNS and "configuration" in long.frame.columns
    assert "data_fraction=0.1" in long.frame.loc[0, "configuration"]
    tex = report.to_latex(table)
    assert tex.count("&", 0, tex.index("\\midrule")) == long.frame.shape[1] - 1


def test_latex_is_escaped_by_the_styler():
    tex = report.to_latex(report.summarize(sweep_runs(boundaries=("block_14_expand", "block_15_expand"))))
    body = tex[: tex.index("\\end{tabular}")]
    assert "block\\_14\\_expand" in body and "block_14" not in body and "$\\pm$" in body and "95\\% CI" in body
    assert tex.splitlines()[-1] == "% needs \\usepackage{booktabs}" and "% Every row: " in tex


# ------------------------------------------------------------------------------------------ from_csv


def test_from_csv_renders_the_same_tables(tmp_path):
    table = report.summarize(sweep_runs())
    table.to_csv(tmp_path / "results.csv", index=False)
    back = report.read_table(tmp_path / "results.csv")
    assert report.to_markdown(back) == report.to_markdown(table)
    assert report.to_latex(back) == report.to_latex(table)
    assert back["lr"].tolist() == ["1e-05"] * 2  # the logged strings, not floats


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
    assert (tmp_path / "results" / "results.tex").read_text().startswith("\\begin{tabular}")


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
    md = report.to_markdown(table)
    assert "cached ones they reused left out" in md
    assert [cells(r)[-1] for r in md_rows(md)[2:]] == ["0.75", "2.00", "–", "2.00"]


def test_summary_figures_with_one_x_value_are_skipped_and_logged(tmp_path, caplog):
    table = report.summarize(sweep_runs())  # two fractions, one boundary
    (tmp_path / plots.FIGURE_UNFREEZE).write_bytes(b"stale")
    finished = report.tables.finished_runs(sweep_runs())
    curves = pd.DataFrame(columns=["run_id", "step", "val_acc", "source_run_id"])
    with caplog.at_level("INFO", logger="harness.report"):
        written = plots.write_figures(table, finished, curves, tmp_path)
    names = {p.name for p in written}
    assert plots.FIGURE_FRACTION in names and plots.FIGURE_UNFREEZE not in names
    assert not (tmp_path / plots.FIGURE_UNFREEZE).exists()  # a stale one would be mistaken for this study's
    assert "test_acc_vs_unfreeze_at.png skipped: one unfreeze_at value" in caplog.text


def test_unfreeze_legend_shows_line_styles_outside_the_axes():
    table = report.summarize(sweep_runs(fractions=("0.1", "1.0"), boundaries=("block_14_expand", "block_15_expand")))
    fig = plots.unfreeze_figure(table)
    legend = fig.axes[0].get_legend()
    styles = {handle.get_linestyle() for handle in legend.legend_handles}
    assert len(styles) == 2 and legend.handlelength >= 3  # one style per fraction, long enough to tell apart
    fig.canvas.draw()
    assert legend.get_window_extent().y1 < fig.axes[0].get_window_extent().y0  # below the axes, not over lines
    plots.close(fig)


def test_titles_wrap_between_pairs():
    title = plots._title({f"key_{i}": "value_" * 3 for i in range(8)}, width=60)
    assert all(len(line) <= 60 for line in title.splitlines()) and len(title.splitlines()) > 1
    assert all("=" in part for line in title.splitlines() for part in line.strip(", ").split(", "))


def test_a_step_budget_hides_the_epochs_keys_it_overrode():
    from harness.report.tables import decided_by_budget

    assert decided_by_budget("steps head 630, finetune 126") == {"epochs_head", "epochs_finetune"}
    assert decided_by_budget("epochs") == set()


def test_the_fine_tuning_marker_follows_the_curves_not_the_epochs_key():
    """A budget or the stopping rule decides where the head phase ends: seed 0's ran 3 epochs, seed 1's 5."""

    finished = pd.DataFrame(
        {"run_id": ["f0", "t0", "f1", "t1"], "regime": ["frozen", "finetune"] * 2, "seed": ["0", "0", "1", "1"]}
    )
    steps = {"f0": range(3), "t0": range(3, 5), "f1": range(5), "t1": range(5, 7)}
    curves = pd.DataFrame([(r, s, 0.9) for r, ss in steps.items() for s in ss], columns=["run_id", "step", "val_acc"])
    fig = plots.curves_figure(finished, curves)
    markers = [line for line in fig.axes[0].lines if line.get_label().startswith("start fine-tuning")]
    assert [m.get_xdata()[0] for m in markers] == [3.5] and "earliest seed" in markers[0].get_label()


def test_seed_means_count_each_phase_from_its_start_over_the_epochs_every_seed_ran():
    """A stopping rule ended seed 0's head at epoch 3, seed 1's at 5: fine-tuning ran epochs 4-5 and 6-8."""
    finished = pd.DataFrame(
        {
            "run_id": ["f0", "t0", "f1", "t1"],
            "regime": ["frozen", "finetune"] * 2,
            "seed": ["0", "0", "1", "1"],
            "backbone": "mobilenetv2",
        }
    )
    acc = {
        "f0": [0.80, 0.90, 0.92],
        "f1": [0.70, 0.80, 0.94, 0.99, 0.99],
        "t0": [0.95, 0.93],
        "t1": [0.91, 0.97, 0.99],
    }
    start = {"f0": 0, "f1": 0, "t0": 3, "t1": 5}
    curves = pd.DataFrame(
        [(run, start[run] + i, a) for run, values in acc.items() for i, a in enumerate(values)],
        columns=["run_id", "step", "val_acc"],
    )
    best = best_validation(finished, curves, ["backbone"])
    # frozen: epochs 1-3 (seed 1's 4 and 5 left out), mean 0.75, 0.85, 0.93; fine-tuned: its epochs 1-2
    assert best.loc[("mobilenetv2", "frozen")].tolist() == pytest.approx([0.93, 3])
    assert best.loc[("mobilenetv2", "finetune")].tolist() == pytest.approx([0.95, 2])
    fig = plots.curves_figure(finished, curves)
    means = {line.get_label(): line for line in fig.axes[0].lines if "mean" in line.get_label()}
    tuned = means["fine-tuned (mean of seeds, epochs all ran)"]
    assert list(tuned.get_xdata()) == [4, 5] and list(tuned.get_ydata()) == pytest.approx([0.93, 0.95])
    assert list(means["frozen (mean of seeds, epochs all ran)"].get_xdata()) == [1, 2, 3]
    plots.close(fig)
