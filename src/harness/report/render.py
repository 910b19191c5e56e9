"""The summary as people read it: a long table (one row per configuration x regime), Markdown and LaTeX.

The wide results.csv has every number of a configuration on one row (40+ columns); pasted into a README or a
paper it cannot be read. Here only the keys that vary are columns, the constant ones go to one caption line,
and each regime that ran is a row, so the table stays within MAX_COLUMNS.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from harness.report.runs import DIFF, MISSING, REGIME_LABELS
from harness.report.tables import HEAD_TRAINED, regimes_run, split_keys

MAX_COLUMNS = 12
NOT_APPLICABLE = ""  # Δ vs frozen on a frozen or scratch row: no such number (MISSING: a number that is undefined)


@dataclass
class LongTable:
    """The long table's cells (strings), the caption (constant keys) and the notes that explain the columns."""

    frame: pd.DataFrame
    caption: str
    notes: list[str]
    key_columns: int  # leading text columns (keys, regime): left-aligned in LaTeX


def _num(x: float, fmt: str = ".3f") -> str:
    return MISSING if pd.isna(x) else format(x, fmt)


def _interval(lo: float, hi: float, fmt: str = ".3f") -> str:
    return MISSING if pd.isna(lo) or pd.isna(hi) else f"[{format(lo, fmt)}, {format(hi, fmt)}]"


def _mean_sd(mean: float, sd: float, pm: str) -> str:
    return MISSING if pd.isna(mean) else f"{mean:.3f}" + ("" if pd.isna(sd) else f" {pm} {sd:.3f}")


def _delta(row: pd.Series) -> str:
    if not row[f"{DIFF}_n"]:
        return MISSING
    ci = _interval(row[f"{DIFF}_ci95_lo"], row[f"{DIFF}_ci95_hi"], "+.3f")
    return _num(row[f"{DIFF}_mean"], "+.3f") + ("" if ci == MISSING else f" {ci}")


def _key_columns(table: pd.DataFrame, varying: list[str], room: int) -> dict[str, pd.Series]:
    """One column per varying key, or all of them in one `configuration` column when there is no room."""
    if len(varying) <= room:
        return {k: table[k].astype(str) for k in varying}
    joined = table[varying].astype(str).apply(lambda r: ", ".join(f"{k}={v}" for k, v in r.items()), axis=1)
    return {"configuration": joined}


def _epochs(row: pd.Series, regime: str) -> str:
    """Mean epochs run, with "(k early)" when the early-stopping rule ended k of the runs."""
    mean, early = row.get(f"{regime}_epochs_run"), row.get(f"{regime}_stopped_early")
    if mean is None or pd.isna(mean):
        return MISSING
    text = f"{mean:.0f}" if float(mean).is_integer() else f"{mean:.1f}"
    return text + (f" ({int(early)} early)" if early is not None and not pd.isna(early) and early else "")


def long_table(table: pd.DataFrame, latex: bool = False) -> LongTable:
    """One row per configuration x regime that ran, at most MAX_COLUMNS columns; see the module docstring."""
    varying, constant = split_keys(table)
    pm = "$\\pm$" if latex else "±"
    has_val = bool(table[[f"{r}_best_val_epoch" for r in regimes_run(table)]].notna().any().any())
    has_diff = bool(table[f"{DIFF}_n"].any())
    lengths = [f"{r}_epochs_run" for r in regimes_run(table) if f"{r}_epochs_run" in table]
    has_epochs = bool(lengths) and bool(table[lengths].notna().any().any())
    stats = ["regime", "n", f"test acc (mean {pm} sd)", "95% CI"]
    stats += ["best val acc (epoch)"] * has_val
    delta = "$\\Delta$ vs frozen [95% CI]" if latex else "Δ vs frozen [95% CI]"
    stats += [delta, "p (paired t)"] * has_diff
    stats += ["epochs run"] * has_epochs
    stats += ["train min"]
    keys = _key_columns(table, varying, MAX_COLUMNS - 1 - len(stats))
    rows = []
    for i, row in table.iterrows():
        for regime in regimes_run(table):
            if not row[f"{regime}_n"]:
                continue
            cells = {"config": str(row["config"]), **{k: col[i] for k, col in keys.items()}}
            cells.update(
                {
                    "regime": REGIME_LABELS[regime],
                    "n": str(row[f"{regime}_n"]),
                    stats[2]: _mean_sd(row[f"{regime}_test_acc_mean"], row[f"{regime}_test_acc_std"], pm),
                    "95% CI": _interval(row[f"{regime}_test_acc_ci95_lo"], row[f"{regime}_test_acc_ci95_hi"]),
                    "best val acc (epoch)": MISSING
                    if pd.isna(row[f"{regime}_best_val_acc"])
                    else f"{row[f'{regime}_best_val_acc']:.3f} ({int(row[f'{regime}_best_val_epoch'])})",
                    delta: _delta(row) if regime == "finetune" else NOT_APPLICABLE,
                    "p (paired t)": _num(row[f"{DIFF}_p"], ".3g") if regime == "finetune" else NOT_APPLICABLE,
                    "epochs run": _epochs(row, regime),
                    "train min": _num(row[f"{regime}_train_time_s"] / 60, ".2f"),
                }
            )
            rows.append(cells)
    columns = ["config", *keys, *stats]
    frame = pd.DataFrame(rows, columns=columns).fillna(MISSING)
    caption = ("Every row: " + ", ".join(f"{k}={v}" for k, v in constant.items()) + ".") if constant else ""
    notes = _notes(table, has_val, has_diff, has_epochs)
    return LongTable(frame, caption, notes, 2 + len(keys))


def _notes(table: pd.DataFrame, has_val: bool, has_diff: bool, has_epochs: bool = False) -> list[str]:
    """What the columns mean, only for the columns shown."""
    notes = [
        "config: the configuration's number (val_acc_curves_NN.png); n: seeds (finished runs); test acc: mean ± sd"
        " over seeds; 95% CI: Student-t interval of the mean (not clipped at 1)."
    ]
    ran = regimes_run(table)
    if has_val:
        tuned = " (fine-tuned: counted from the start of fine-tuning)" if "finetune" in ran else ""
        curve = "the seed-mean validation curve, over the epochs every seed ran"
        notes.append(f"best val acc (epoch): best epoch of {curve}{tuned}.")
    if has_diff:
        notes.append(
            "Δ vs frozen: fine-tuned − frozen test acc paired by seed, mean [95% CI]; p: paired t-test"
            " (– where fewer than 2 pairs or no spread)."
        )
    if has_epochs:
        after = " (fine-tuned: after the head phase)" if "finetune" in ran else ""
        notes.append(
            f"epochs run: mean epochs of the regime's own phase{after}; (k early): k runs ended by the"
            " early-stopping rule (caption: stopping), evaluated on their best epoch's weights."
        )
    parts = ["fine-tuned: the fine-tuning phase only"] * ("finetune" in ran)
    if "frozen" in ran and HEAD_TRAINED in table:
        parts.append("frozen: the head phases these runs trained, cached ones they reused left out, – if all were")
    elif "frozen" in ran:  # a results.csv written before the report told reused head phases apart
        parts.append("frozen: as recorded, a reused cached head phase with the time of the run that trained it")
    notes.append("train min: mean minutes of the regime's own training" + (f" ({'; '.join(parts)})." if parts else "."))
    return notes


def to_markdown(table: pd.DataFrame) -> str:
    """GitHub Markdown: the caption (constant keys), the long table, then what its columns mean."""
    long = long_table(table)
    align = ["left"] * long.key_columns + ["right"] * (long.frame.shape[1] - long.key_columns)
    text = long.frame.to_markdown(index=False, disable_numparse=True, colalign=align)
    head = f"{long.caption}\n\n" if long.caption else ""
    return head + text + "\n\n" + " ".join(long.notes) + "\n"


def to_latex(table: pd.DataFrame) -> str:
    """A booktabs `tabular` for \\input into a paper (needs \\usepackage{booktabs}); caption and notes as comments.

    Cells and headers are escaped by pandas' Styler (escape="latex-math": underscores of layer names escaped,
    the $...$ of ± and Δ kept), '–' becomes '--'.
    """
    long = long_table(table, latex=True)
    column_format = "l" * long.key_columns + "r" * (long.frame.shape[1] - long.key_columns)
    styler = long.frame.style.hide(axis="index")
    styler = styler.format(lambda v: "--" if v == MISSING else v, escape="latex-math")
    styler = styler.format_index(escape="latex-math", axis=1)
    text = styler.to_latex(hrules=True, column_format=column_format)
    comments = [long.caption, *long.notes, "needs \\usepackage{booktabs}"]
    return text + "".join(f"% {_comment(c)}\n" for c in comments if c)


def _comment(text: str) -> str:
    """A note as a LaTeX comment line: one line, its Unicode spelled so the .tex stays ASCII-readable."""
    return text.replace("±", "+/-").replace("Δ", "Delta").replace("−", "-").replace("–", "--").replace("\n", " ")
