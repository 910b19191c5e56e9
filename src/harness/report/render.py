"""The report as people read and paste it: tables in Markdown and LaTeX.

- the results: one row per configuration x regime, the keys that vary as columns (booleans as yes/no), the
  constant ones in the caption; accuracies in percent with one decimal throughout;
- the comparisons between regimes: the paired difference in points with its interval, the p-value of the test
  that produced it (named in the row), the p-value adjusted over every comparison of the report, McNemar's p
  per seed beside it, and the seeds a paired t-test would need for 80% power;
- the targets stated before the run, met or not; per-class accuracy where the runs logged predictions.

LaTeX: one `table` environment per table with \\caption and \\label, booktabs rules, real minus signs, scaled
to the column width (needs \\usepackage{booktabs,graphicx}); `wide=True` gives `table*` across both columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from harness.report.runs import MISSING, REGIME_LABELS
from harness.report.tables import HEAD_TRAINED, REUSED, regimes_run, split_keys
from harness.training import specs

MINUS = "−"  # U+2212, a real minus sign (LaTeX: $-$)


@dataclass
class Section:
    """One table of the report: its cells (strings), title, caption (constant keys) and the notes on its columns."""

    name: str
    frame: pd.DataFrame
    caption: str = ""
    notes: list[str] = field(default_factory=list)
    key_columns: int = 1  # leading text columns, left-aligned


def pct(x: float) -> str:
    """An accuracy in percent, one decimal: 0.9744 -> 97.4."""
    return MISSING if pd.isna(x) else f"{100 * x:.1f}"


def points(x: float) -> str:
    """A difference of accuracies in percentage points with its sign: 0.004 -> +0.4, -0.012 -> −1.2."""
    return MISSING if pd.isna(x) else f"{100 * x:+.1f}".replace("-", MINUS)


# The smallest p-value a recorded bootstrap row can hold: 2 / (10,000 resamples + 1). At it, the bootstrap says
# only that no resample crossed 0; the table says so rather than print a smaller-sounding number.
BOOTSTRAP_FLOOR = 2 / 10_001


def p_value(p: float, at_floor: bool = False, adjusted: bool = False) -> str:
    """Two significant digits (3.1e-05 below 0.001: a t-test's p has no floor); a recorded bootstrap's p at its
    resampling floor as "≤ 2e-4 (the resampling floor)", and the adjusted p of such a row as an upper bound."""
    if pd.isna(p):
        return MISSING
    text = f"{p:.2g}"
    if at_floor:
        return f"≤ {text}" if adjusted else "≤ 2e-4 (the resampling floor)"
    return text


def _per_seed(values: object) -> str:
    """`0.01,0.2,0.5` (the CSV's cell) as `0.01, 0.2, 0.5`; a dash where no test was possible."""
    return ", ".join(values.split(",")) if isinstance(values, str) and values else MISSING


def _interval(lo: float, hi: float, one=pct) -> str:
    return MISSING if pd.isna(lo) or pd.isna(hi) else f"[{one(lo)}, {one(hi)}]"


def key_value(value: object) -> str:
    """A configuration value as a reader wants it: booleans as yes/no, the rest as logged."""
    return {"True": "yes", "False": "no"}.get(str(value), str(value))


def _caption(constant: dict[str, str]) -> str:
    return ("Every row: " + ", ".join(f"{k}={key_value(v)}" for k, v in constant.items()) + ".") if constant else ""


def _epochs(row: pd.Series, regime: str) -> str:
    """Mean epochs run, with "(k early)" when the early-stopping rule ended k of the runs."""
    mean, early = row.get(f"{regime}_epochs_run"), row.get(f"{regime}_stopped_early")
    if mean is None or pd.isna(mean):
        return MISSING
    text = f"{mean:.0f}" if float(mean).is_integer() else f"{mean:.1f}"
    return text + (f" ({int(early)} early)" if early is not None and not pd.isna(early) and early else "")


def _val(row: pd.Series, regime: str, column: str) -> str:
    epoch_column = f"{regime}_tested_epoch" if column == "tested_val" else f"{regime}_best_val_epoch"
    acc, epoch = row.get(f"{regime}_{column}_acc"), row.get(epoch_column)
    if acc is None or pd.isna(acc):
        return MISSING
    return f"{pct(acc)} ({int(epoch)})" if epoch is not None and not pd.isna(epoch) else pct(acc)


CI_NOTES = {
    "all": "95% CI (seeds x images): the crossed t interval of the accuracy over new seeds and new test images, from"
    " every seed's outcome on every test image (the seeds' spread and the test set's sampling; see the comparisons'"
    " crossed t).",
    "none": "95% CI (seeds): Student-t interval of the mean over seeds, the seeds' spread only: no per-image outcomes"
    " were at hand (runs recorded before they were logged, or a table re-rendered from its CSV), so the test set's"
    " sampling error (on 1,000 test images about ±1 point at 97%, ±3 at 70%) is not in it.",
    "single": "95% CI: none, one seed per configuration (an interval over seeds and test images needs two seeds at"
    " least; McNemar's test per seed compares regimes on the test images).",
    "some": "95% CI: the crossed t interval over seeds and test images where every seed logged per-image"
    " predictions; (seeds): the Student-t interval over seeds alone, without the test set's sampling error.",
}


def _crossed_intervals(table: pd.DataFrame, ran: list[str]) -> str:
    """Whether the results' intervals count the test images: "all", "none" or "some" of the rows, or "single" when
    no row has the two seeds an interval needs."""
    if not any((table[f"{r}_n"] >= 2).any() for r in ran):
        return "single"
    flags = [pd.notna(v) for r in ran if f"{r}_test_images" in table
             for v in table.loc[table[f"{r}_n"] >= 2, f"{r}_test_images"]]  # fmt: skip
    return "none" if not any(flags) else "all" if all(flags) else "some"


def results_section(table: pd.DataFrame, pm: str = "±") -> Section:
    """One row per configuration x regime that ran."""
    varying, constant = split_keys(table)
    ran = regimes_run(table)
    val = "tested_val" if "tested_val_acc" in "".join(table.columns) else "best_val"  # older results.csv: best_val
    has_val = any(f"{r}_{val}_acc" in table and table[f"{r}_{val}_acc"].notna().any() for r in ran)
    has_epochs = any(f"{r}_epochs_run" in table and table[f"{r}_epochs_run"].notna().any() for r in ran)
    header = "val acc % at tested epoch" if val == "tested_val" else "best val acc % (epoch)"
    crossed = _crossed_intervals(table, ran)
    ci_header = {"all": "95% CI (seeds x images)", "none": "95% CI (seeds)", "single": "95% CI (seeds)"}.get(
        crossed, "95% CI"
    )
    rows = []
    for _, row in table.iterrows():
        for regime in ran:
            if not row[f"{regime}_n"]:
                continue
            n = int(row[f"{regime}_n"])
            cells = {k: key_value(row[k]) for k in varying}
            mean, sd = row[f"{regime}_test_acc_mean"], row[f"{regime}_test_acc_std"]
            cells.update(
                {
                    "regime": REGIME_LABELS[regime],
                    "n": str(n),
                    f"test acc % (mean {pm} sd)": pct(mean) + ("" if pd.isna(sd) else f" {pm} {100 * sd:.1f}"),
                    ci_header: _interval(row[f"{regime}_test_acc_ci95_lo"], row[f"{regime}_test_acc_ci95_hi"])
                    + ("" if crossed != "some" or pd.notna(row.get(f"{regime}_test_images")) else " (seeds)")
                    if n >= 2
                    else "single run",
                    header: _val(row, regime, val),
                    "epochs run": _epochs(row, regime),
                    "train min": MISSING
                    if pd.isna(row[f"{regime}_train_time_s"])
                    else f"{row[f'{regime}_train_time_s'] / 60:.1f}",
                }
            )
            rows.append(cells)
    columns = [*varying, "regime", "n", f"test acc % (mean {pm} sd)", ci_header]
    columns += [header] * has_val + ["epochs run"] * has_epochs + ["train min"]
    frame = pd.DataFrame(rows, columns=columns).fillna(MISSING)
    notes = ["n: seeds (finished runs). test acc: on the test split, mean ± sd over seeds. " + CI_NOTES[crossed]]
    if has_val and val == "tested_val":
        continuing = [specs.spec(r) for r in ran if specs.spec(r).starts_from]
        tuned = "".join(f"{s.label}: from the start of its own phase; " for s in continuing)
        notes.append(
            "val acc at tested epoch: validation accuracy of the weights that were tested, mean over seeds, and that"
            " epoch (median over seeds): the restored best epoch when the stopping rule was on, else the last; counted"
            f" from 1 within the phase ({tuned}0 is before training)."
        )
    elif has_val:
        notes.append("best val acc (epoch): best epoch of the seed-mean validation curve (this results.csv's own).")
    if has_epochs:
        notes.append("epochs run: mean epochs of the regime's own phase; (k early): k runs the stopping rule ended.")
    parts = [f"{specs.spec(r).label}: its own phase only" for r in ran if specs.spec(r).starts_from]
    if REUSED.name in ran:
        kind = f"{REUSED.reuse.kind} phases"  # type: ignore[union-attr]
        parts.append(f"{REUSED.label}: {kind} these runs trained, reused cached ones left out" if HEAD_TRAINED in table
                     else f"{REUSED.label}: as recorded")  # fmt: skip
    notes.append("train min: mean minutes of the regime's own training" + (f" ({'; '.join(parts)})." if parts else "."))
    return Section("Results", frame, _caption(constant), notes, len(varying) + 1)


def _tested_cells(row: pd.Series, adjust: str) -> dict[str, str]:
    """The cells every comparison shows: seeds (and images), difference and interval, raw and adjusted p, test,
    McNemar per seed, seeds for 80% power."""
    images = "" if pd.isna(row["images"]) else f" x {int(row['images'])} images"
    power = row["seeds_for_80pct_power"]
    floor = _test_name(row["method"]) == "bootstrap" and row["p"] <= BOOTSTRAP_FLOOR * (1 + 1e-9)
    return {
        "seeds": f"{int(row['n'])}{images}",
        "Δ points [95% CI]": f"{points(row['mean'])} {_interval(row['ci_lo'], row['ci_hi'], points)}",
        "p": p_value(row["p"], floor),
        _adjusted_header(adjust): p_value(row[f"p_{adjust}"], floor, adjusted=True),
        "test": _test_name(row["method"]),
        "McNemar p per seed": _per_seed(row["mcnemar_p"]),
        "seeds for 80% power": MISSING if pd.isna(power) else "∞" if power == float("inf") else f"{power:.0f}",
    }


def _adjusted_header(adjust: str) -> str:
    return f"p ({'Holm' if adjust == 'holm' else 'BH'})"


def _tested_notes(frame: pd.DataFrame, adjust: str, family: int, what: str, seed: str = "seed") -> list[str]:
    """How the comparisons were tested (only the tests the table uses) and adjusted."""
    method = "Holm's step-down" if adjust == "holm" else "Benjamini-Hochberg"
    tests = _tests(frame)
    described = {
        "crossed t": "crossed t: the seeds x test images table of paired differences, its mean's variance from the"
        " two-way ANOVA (seeds, images and residual: the test set's sampling counted), Student-t with"
        " Satterthwaite's degrees of freedom corrected for few seeds (false positives 3.5-6.0% at a nominal 5% with"
        " 3, 5 and 10 seeds whatever the seeds' share, in simulated studies: benchmarks/RESULTS.md)",
        "bootstrap": "bootstrap: as recorded before December 2026, 10,000 resamples of seeds and images together,"
        " percentile interval; not calibrated at few seeds (at a nominal 5% it rejects 13% of true nulls with 3 seeds"
        " when the seeds' spread dominates, 0.3-1.7% when the test images' does: benchmarks/RESULTS.md), its"
        " smallest p is 2/10,001",
        "paired t": "paired t: Student's paired t-test over seeds and its interval, for runs without per-image"
        " predictions on the same test images (recorded before the jobs logged them: no image-level test, no"
        " McNemar; the test images' sampling is not in it, so it rejects up to 19% of true nulls at 10 seeds when"
        " the images dominate: benchmarks/RESULTS.md)",
    }
    paired = f"by {seed} and by test image" if tests & {"crossed t", "bootstrap"} else f"by {seed}"
    power = {
        "crossed t": "the seeds the crossed t-test needs on this many test images to detect the observed difference"
        " with 80% power at the variance it estimated (∞: more seeds cannot, more test images would)",
        "bootstrap": "for the bootstrap rows, the seeds a two-sided paired t-test over seeds (5%) needs at the"
        " observed difference and spread between seeds (no power is computed for the bootstrap itself)",
        "paired t": "the seeds a two-sided paired t-test (5%) needs to detect the observed difference at the"
        " observed spread between seeds",
    }
    return [
        f"Δ: {what}, paired {paired}. " + "; ".join(described[t] for t in sorted(tests)) + ".",
        f"{_adjusted_header(adjust)}: adjusted by {method} over {_family(family)} of this report. McNemar p"
        " per seed: exact test on the images one side got right and the other wrong, each seed alone (descriptive,"
        " not adjusted). seeds for 80% power: " + "; ".join(power[t] for t in sorted(tests)) + ".",
    ]


TESTED_COLUMNS = ["seeds", "Δ points [95% CI]", "p", "test", "McNemar p per seed", "seeds for 80% power"]


def comparisons_section(
    comparisons: pd.DataFrame, varying: list[str], adjust: str = "holm", family: int | None = None
) -> Section:
    """Each pair of regimes of each configuration: difference, interval, test, raw and adjusted p, power;
    `family`: the comparisons the p-values were adjusted over (these, unless the report compares a key too)."""
    rows = []
    for _, row in comparisons.iterrows():
        cells = {k: key_value(row[k]) for k in varying}
        rows.append({**cells, "comparison": row["comparison"], **_tested_cells(row, adjust)})
    columns = [*varying, "comparison", *TESTED_COLUMNS[:3], _adjusted_header(adjust), *TESTED_COLUMNS[3:]]
    frame = pd.DataFrame(rows, columns=columns).fillna(MISSING)
    what = "first minus second regime's test accuracy"
    notes = _tested_notes(comparisons, adjust, family or len(comparisons), what, "seed (the same job)")
    return Section("Comparisons", frame, "", notes, len(varying) + 1)


def key_comparisons_section(
    by_key: pd.DataFrame, varying: list[str], adjust: str, family: int, above: pd.DataFrame | None = None
) -> Section:
    """`compare=<key>`: each value of the key against its baseline, regime by regime, within each configuration of
    the other keys; `above`: the regime comparisons shown before it, whose notes already describe its tests."""
    columns = list(by_key.columns)
    key = columns[columns.index("regime") - 1]  # evidence.key_comparisons: [*other keys, key, "regime", ...]
    others = [k for k in varying if k != key]
    rows = []
    for _, row in by_key.iterrows():
        cells = {k: key_value(row[k]) for k in others}
        versus = f"{key_value(row['better'])} − {key_value(row['baseline'])}"
        rows.append({**cells, "regime": REGIME_LABELS.get(row["regime"], row["regime"]), key: versus,
                     **_tested_cells(row, adjust)})  # fmt: skip
    columns = [*others, "regime", key, *TESTED_COLUMNS[:3], _adjusted_header(adjust), *TESTED_COLUMNS[3:]]
    frame = pd.DataFrame(rows, columns=columns).fillna(MISSING)
    what = f"test accuracy with the first value of {key} minus with the second, the same regime and seed"
    notes = _tested_notes(by_key, adjust, family, what)
    if above is not None and not above.empty and _tests(by_key) <= _tests(above):
        paired = "by seed and by test image" if _tests(by_key) & {"crossed t", "bootstrap"} else "by seed"
        notes = [f"Δ: {what}, paired {paired}; tests, adjustment (over {_family(family)}) and columns as above."]
    listed = by_key.get("also_differs", pd.Series(dtype=str)).fillna("")
    along = list(dict.fromkeys(k for entry in listed for k in str(entry).split(", ") if k))
    if along:
        hidden = [k for k in along if k not in others]  # a key the regimes compared do not use (not a column)
        values = [f"{k} {by_key[k].iloc[0]}" for k in hidden if k in by_key]
        unused = f" ({', '.join(values)}: not used by the regimes compared, so not a column)" if values else ""
        notes.append(
            f"{', '.join(along)}: changed together with {key} in these runs (one value of each per value of {key}),"
            f" so Δ compares those configurations, not {key} alone{unused}."
        )
    return Section(f"Comparisons across {key}", frame, "", notes, len(others) + 2)


def _family(size: int) -> str:
    return "the one comparison" if size == 1 else f"the {size} comparisons"


def _test_name(method: object) -> str:
    """The short name of a row's test, as the table's test column prints it."""
    text = str(method)
    if text.startswith("crossed"):
        return "crossed t"
    return "bootstrap" if text.startswith("paired bootstrap") else "paired t"


def _tests(frame: pd.DataFrame) -> set[str]:
    return {_test_name(m) for m in frame["method"]}


def targets_section(judged: pd.DataFrame, varying: list[str], texts: list[dict[str, str]]) -> Section:
    rows = []
    for _, row in judged.iterrows():
        cells = {k: key_value(row[k]) for k in varying}
        one = points if "_minus_" in row["target"] else pct
        cells.update(
            {
                "target": f"{row['target']} {row['stated']}",
                "observed [95% CI]": f"{one(row['mean'])} {_interval(row['ci_lo'], row['ci_hi'], one)}",
                "met": "yes" if row["met"] else "no",
                "whole interval": "yes" if row["interval"] else "no",
            }
        )
        rows.append(cells)
    frame = pd.DataFrame(rows, columns=[*varying, "target", "observed [95% CI]", "met", "whole interval"])
    notes = [
        "Targets as recorded on the study's runs when the work started (not as the config says today); met: the"
        " mean is on the target's side; whole interval: so is all of its 95% interval. Accuracies in percent,"
        " differences in points."
    ]
    per_configuration = [c for c in judged.columns if c not in ("stated", "mean", "ci_lo", "ci_hi", "met", "interval")]
    if judged.duplicated(per_configuration).any():  # one configuration, one target, two recorded texts
        notes.append(f"The recorded targets changed between runs: {'; '.join(map(str, texts))}.")
    elif len(texts) > 1:
        notes.append("Each sweep's targets are judged on the configurations it ran.")
    return Section("Targets stated before the run", frame, "", notes, len(varying) + 1)


def per_class_section(per_class: pd.DataFrame, varying: list[str]) -> Section:
    frame = pd.DataFrame(
        {
            **{k: per_class[k].map(key_value) for k in varying},
            "regime": per_class["regime"].map(REGIME_LABELS),
            "class": per_class["class"],
            "images": per_class["images"].astype(int).astype(str),
            "acc % (mean over seeds)": per_class["acc_mean"].map(pct),
            "lowest seed": per_class["acc_min_seed"].map(pct),
        }
    )
    notes = ["Test accuracy on each class's images, from each run's per-image predictions (predictions/test.csv)."]
    return Section("Per class", frame, "", notes, len(varying) + 2)


def _markdown(section: Section, level: str = "###") -> str:
    align = ["left"] * section.key_columns + ["right"] * (section.frame.shape[1] - section.key_columns)
    text = section.frame.to_markdown(index=False, disable_numparse=True, colalign=align)
    head = f"{level} {section.name}\n\n" + (f"{section.caption}\n\n" if section.caption else "")
    return head + text + "\n\n" + " ".join(section.notes) + "\n"


def to_markdown(sections: list[Section]) -> str:
    """GitHub Markdown: each section's title, caption, table and notes."""
    return "\n".join(_markdown(s) for s in sections if not s.frame.empty)


def _latex_cell(value: str) -> str:
    value = value.replace(MINUS, "$-$").replace("±", "$\\pm$").replace("Δ", "$\\Delta$").replace("–", "--")
    return value.replace("< 0.001", "$<$ 0.001").replace("≤", "$\\le$").replace("∞", "$\\infty$")


def to_latex(sections: list[Section], label: str = "results", wide: bool = False) -> str:
    """One table environment per section, for \\input into a paper (needs \\usepackage{booktabs,graphicx})."""
    environment = "table*" if wide else "table"
    width = "\\textwidth" if wide else "\\columnwidth"
    out = []
    for section in sections:
        if section.frame.empty:
            continue
        frame = section.frame.map(_latex_cell).rename(columns=_latex_cell)
        column_format = "l" * section.key_columns + "r" * (frame.shape[1] - section.key_columns)
        styler = frame.style.hide(axis="index").format(escape="latex-math").format_index(escape="latex-math", axis=1)
        tabular = styler.to_latex(hrules=True, column_format=column_format)
        caption = " ".join(x for x in (section.name + ".", section.caption, *section.notes) if x)
        caption = _latex_cell(caption).replace("%", "\\%").replace("_", "\\_")
        tag = section.name.lower().split()[0]
        out.append(
            f"\\begin{{{environment}}}[t]\n\\centering\n\\resizebox{{{width}}}{{!}}{{%\n{tabular}}}\n"
            f"\\caption{{{caption}}}\n\\label{{tab:{label}-{tag}}}\n\\end{{{environment}}}\n"
        )
    return "% needs \\usepackage{booktabs,graphicx}\n" + "\n".join(out)
