"""Are the report's intervals and p-values calibrated at few seeds? Simulated studies with a known truth.

Every setting of `harness.report.calibration.settings()`: comparisons of two regimes with no true difference and
single-regime accuracies; 3, 5 and 10 seeds; 1,000 test images shared by every seed (hard images stay hard);
accuracies near 75% and 95%; the seeds' share of the variance of the mean at 10%, 50% and 90%. For each, the share
of replicates in which a nominal 5% test rejects the truth (for a comparison: the false-positive rate) and in which
the 95% interval holds it, for:

- `crossed t`: the report's test (`stats.crossed_test`), the target is 3-7% and 92-98%;
- `seeds t`: the Student-t interval over the seeds' accuracies alone (the paired t-test for a comparison), what
  the results table used for a single regime before December 2026;
- `bootstrap`: the report's comparison before December 2026 (`calibration.former_bootstrap`; comparisons only,
  fewer replicates and 2,000 resamples: it is slow, and its calibration does not depend on the resample count).

Prints a Markdown table (paste it into benchmarks/RESULTS.md) and exits non-zero when a crossed-t row misses its
target. `--smoke` runs two settings with 200 replicates, in seconds, to check that the script still runs.

    python benchmarks/calibration.py [--replicates 4000] [--bootstrap-replicates 300] [--smoke]
"""

from __future__ import annotations

import argparse
import sys
import time

import pandas as pd

from harness.report import calibration


def row(setting: calibration.Setting, replicates: int, bootstrap_replicates: int) -> dict[str, object]:
    started = time.perf_counter()
    crossed = calibration.calibrate(setting, replicates)
    seeds = calibration.calibrate(setting, replicates, calibration.seeds_t_tests)
    out: dict[str, object] = {
        "kind": setting.kind,
        "seeds": setting.seeds,
        "accuracy": setting.accuracy,
        "seed share (target)": setting.seed_share,
        "seed share (realised)": round(setting.share(), 3),
        "replicates": replicates,
        "crossed t: rejects %": round(100 * crossed.rejected, 1),
        "crossed t: covers %": round(100 * crossed.covered, 1),
        "seeds t: rejects %": round(100 * seeds.rejected, 1),
        "bootstrap: rejects %": "",
        "target met": "yes" if crossed.fine else "NO",
    }
    if setting.kind == "difference" and bootstrap_replicates:
        former = calibration.calibrate(
            setting, bootstrap_replicates, lambda x: calibration.former_bootstrap(x, resamples=2000)
        )
        out["bootstrap: rejects %"] = f"{100 * former.rejected:.1f} (of {bootstrap_replicates})"
    out["s"] = round(time.perf_counter() - started, 1)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicates", type=int, default=4000)
    parser.add_argument("--bootstrap-replicates", type=int, default=300)
    parser.add_argument("--smoke", action="store_true", help="two settings, 200 replicates: does it still run?")
    args = parser.parse_args()
    settings = calibration.settings()
    if args.smoke:
        settings = [s for s in settings if s.seeds == 3 and s.accuracy == 0.75 and s.seed_share == 0.9]
        args.replicates, args.bootstrap_replicates = 200, 50
    rows = []
    for setting in settings:
        rows.append(row(setting, args.replicates, args.bootstrap_replicates))
        print(f"  {setting}: {rows[-1]['crossed t: rejects %']}% rejected", file=sys.stderr, flush=True)
    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False))
    missed = table["target met"].eq("NO").sum()
    print(f"\ncrossed t: {len(table) - missed} of {len(table)} settings within 3-7% rejected and 92-98% covered")
    return 0 if args.smoke or not missed else 1


if __name__ == "__main__":
    sys.exit(main())
