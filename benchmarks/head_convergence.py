"""Do the default settings converge a frozen head, on a small and on a full training set?

On 250 and on 2,000 of the shared training photographs (data_fraction 0.125 and 1.0), 3 seeds each, MobileNetV2
with the real ImageNet weights, frozen regime only, every other setting at its default. Three ways to train
the head, each a sweep into one study:

- `defaults`: the defaults (validation loss stops the phase after 5 epochs without improvement, at most 200);
- `converged`: the same head trained until validation loss has not fallen for 30 epochs (at most 3,000): the
  reference, "trained to convergence";
- `old defaults`: the defaults before 2026-11-29 (10 epochs, no stopping rule), for comparison.

Prints, per training-set size and setting, the validation accuracy of the weights that were tested (mean over
seeds) and the epochs run, and writes a figure of the seed-mean validation loss per epoch. Needs ../shared.

    python benchmarks/head_convergence.py [--out benchmarks/head_convergence.png]
    python benchmarks/head_convergence.py --smoke --out /tmp/h.png   # one seed, generated images: seconds
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT.parent / "shared" / "weights" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
SETTINGS = {
    "defaults": [],
    "converged": ["early_stopping.patience=30", "epochs.head=3000"],
    "old defaults": ["early_stopping.enabled=false", "epochs.head=10"],
}
FRACTIONS = {"0.125": 250, "1.0": 2000}


FULL = ["seed=0,1,2", "data=cats_and_dogs_small", "backbone=mobilenetv2", f"backbone.weights={WEIGHTS}"]
# --smoke: the same sweeps and table on generated images, random weights at 32 px, one seed, a few epochs at most
SMOKE = ["seed=0", "backbone=mobilenetv2", "backbone.weights=null", "backbone.image_size=32"]
SMOKE_EPOCHS = {"defaults": ["epochs.head=4"], "converged": ["early_stopping.patience=2", "epochs.head=6"],
                "old defaults": ["early_stopping.enabled=false", "epochs.head=2"]}  # fmt: skip


def sweep(store: str, study: str, extra: list[str], cwd: Path, base: list[str]) -> None:
    args = [
        sys.executable, "-m", "harness", "-m", f"data_fraction={','.join(FRACTIONS)}", *base, "regimes=[frozen]",
        f"tracking_uri={store}", f"study={study}", f"cache_dir={cwd / 'cache'}", *extra,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=7200)
    if proc.returncode != 0:
        raise RuntimeError((proc.stdout + proc.stderr)[-4000:])


def runs_of(store: str, study: str) -> pd.DataFrame:
    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(experiment_names=[study], filter_string="tags.run_kind = 'regime'")
    client = mlflow.MlflowClient()
    rows = []
    for _, run in runs.iterrows():
        curves = {
            m: {x.step: x.value for x in client.get_metric_history(run.run_id, m)} for m in ("val_acc", "val_loss")
        }
        restored = run["params.early_stopping.enabled"] == "True"
        last = max(s for s in curves["val_acc"] if s >= 0)
        tested = int(run["metrics.best_epoch"]) if restored else last
        rows.append({"fraction": run["params.data_fraction"], "seed": run["params.seed"],
                     "val_acc": curves["val_acc"][tested], "epochs": last + 1, "tested_epoch": tested + 1,
                     "val_loss_curve": curves["val_loss"]})  # fmt: skip
    return pd.DataFrame(rows)


def figure(results: dict[str, pd.DataFrame], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(FRACTIONS), figsize=(11, 4), sharey=True)
    for ax, (fraction, images) in zip(axes, FRACTIONS.items(), strict=True):
        for setting, style in (("converged", "-"), ("defaults", "--"), ("old defaults", ":")):
            runs = results[setting][results[setting]["fraction"] == fraction]
            curve = pd.DataFrame(list(runs["val_loss_curve"])).mean()  # seed-mean; NaN where a seed stopped
            curve = curve[curve.index >= -1]
            ax.plot(curve.index + 1, curve.to_numpy(), style, label=f"{setting} (mean of {len(runs)} seeds)")
        ax.set_xscale("symlog", linthresh=10)
        ax.set_title(f"{images} training images", fontsize=10)
        ax.set_xlabel("head epoch (0: before training)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("validation loss")
    fig.suptitle("Frozen MobileNetV2 head: validation loss per epoch", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "head_convergence.png")
    parser.add_argument("--smoke", action="store_true", help="generated images, one seed, a few epochs")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="head-convergence-"))
    store = f"sqlite:///{work / 'mlflow.db'}"
    base = FULL
    if args.smoke:
        from harness import data

        photos = data.ensure_synthetic(work / "gen", {"train": 32, "validation": 8, "test": 8})
        base = [*SMOKE, "data=folder", f"data.path={photos}"]
    results = {}
    for setting, extra in SETTINGS.items():
        study = setting.replace(" ", "_")
        sweep(store, study, SMOKE_EPOCHS[setting] if args.smoke else extra, work, base)
        results[setting] = runs_of(store, study)
    figure(results, args.out)
    seeds = len(results["defaults"]["seed"].unique())
    print(f"| training images | setting | val acc % (mean of {seeds} seeds) | epochs run (per seed) | vs converged |")
    print("| --- | --- | --- | --- | --- |")
    for fraction, images in FRACTIONS.items():
        reference = results["converged"].query("fraction == @fraction")["val_acc"].mean()
        for setting, runs in results.items():
            mine = runs[runs["fraction"] == fraction].sort_values("seed")
            gap = 100 * (mine["val_acc"].mean() - reference)
            print(f"| {images} | {setting} | {100 * mine['val_acc'].mean():.1f} | "
                  f"{', '.join(map(str, mine['epochs']))} | {gap:+.1f} points |")  # fmt: skip


if __name__ == "__main__":
    main()
