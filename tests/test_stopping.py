"""One stopping rule for every phase, and budgets in optimizer steps: unit checks and the record in MLflow."""

from __future__ import annotations

import keras
import mlflow
import numpy as np
import pytest
from conftest import run_cli, tiny_job
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from harness import config, data
from harness.jobs import features
from harness.jobs.inputs import prepare
from harness.paths import conf_dir
from harness.training import models, specs, stopping
from harness.training.regime import Context, Recipe
from harness.training.regimes import frozen
from harness.training.trainer import Arrays, Phase, Trainer


def make(*overrides: str):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def diverging_validation(rule: stopping.Rule, max_epochs: int = 20, first_epoch: int = 0):
    """A linear head on random features whose training labels follow x0 + 3 x1 and validation labels x0
    alone: validation improves while the weights are small, then worsens as they grow (best epoch 5 of 8
    with patience 2). The test split is the validation split, so the test metrics must equal the validation
    metrics of the epoch whose weights are evaluated. Returns the result, the head's weights at the end of
    every epoch, the head and the arrays."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 1, 1, 8)).astype("float32")
    train = (x[:64, 0, 0, 0] + 3 * x[:64, 0, 0, 1] > 0).astype("int32")
    val = (x[64:, 0, 0, 0] > 0).astype("int32")
    arrays = Arrays({"train": x[:64], "validation": x[64:], "test": x[64:]}, {}, 2)
    arrays.y = {"train": train, "validation": val, "test": val}
    inputs = keras.Input((1, 1, 8))
    stage = keras.Model(inputs, keras.layers.Identity()(inputs))
    keras.utils.set_random_seed(0)
    head = models.build_head((1, 1, 8), OmegaConf.create({"pooling": "flatten", "units": 0, "dropout": 0.0}), 2)
    snapshots: dict[int, list[np.ndarray]] = {}
    snap = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: snapshots.update({epoch: head.get_weights()})
    )
    trainer = Trainer(2, 16, 0, "rmsprop", None, lambda regime, first: [snap], features=lambda s, a, c: a.x, rule=rule)
    result = trainer.run(arrays, Phase("frozen", "top", stage, head, 3e-2, max_epochs, first_epoch=first_epoch))
    return result, snapshots, head, arrays


def test_early_stopping_stops_before_the_max_and_tests_the_best_epochs_weights():
    rule = stopping.Rule(enabled=True, monitor="val_loss", patience=2, min_delta=0.0)
    result, snapshots, head, arrays = diverging_validation(rule)
    val_loss, out = result.history["val_loss"], result.outcome
    assert out.stopped == "early" and out.epochs_run == len(val_loss) < 20, (out, val_loss)
    assert out.best_epoch == int(np.argmin(val_loss)) > 0 and out.restored
    assert out.epochs_run == out.best_epoch + 1 + rule.patience  # patience epochs without improvement
    assert val_loss[-1] > val_loss[out.best_epoch]  # the last weights are worse: restoring them matters
    # test = validation: the evaluated weights are the best epoch's
    assert result.test["test_loss"] == pytest.approx(val_loss[out.best_epoch], rel=1e-5)
    assert result.test["test_acc"] == pytest.approx(result.history["val_acc"][out.best_epoch])
    for now, best in zip(head.get_weights(), snapshots[out.best_epoch], strict=True):
        np.testing.assert_array_equal(now, best)


def test_disabled_rule_runs_every_epoch_and_keeps_the_last_weights():
    result, snapshots, head, _ = diverging_validation(stopping.OFF, max_epochs=10)
    out = result.outcome
    assert (out.stopped, out.epochs_run, out.restored) == ("max_epochs", 10, False)
    assert out.best_epoch == int(np.argmin(result.history["val_loss"])) != 9  # tracked, not restored
    assert result.test["test_loss"] == pytest.approx(result.history["val_loss"][-1], rel=1e-5)
    for now, last in zip(head.get_weights(), snapshots[9], strict=True):
        np.testing.assert_array_equal(now, last)


def test_best_epoch_is_numbered_like_the_curves_when_a_phase_continues_another():
    rule = stopping.Rule(enabled=True, monitor="val_acc", patience=1, min_delta=0.0)
    result, _, _, _ = diverging_validation(rule, 20, 10)
    acc = result.history["val_acc"]
    assert result.outcome.best_epoch == 10 + int(np.argmax(acc))
    assert result.outcome.stopped == "early"


def test_step_budgets_give_each_fraction_the_same_updates(tmp_path):
    """With a budget, epochs = ceil(steps / ceil(n_train / batch_size)) for the subsampled training split."""
    cfg = make("steps_budget.head=630", "steps_budget.finetune=126", "batch_size=32", "epochs.scratch=4")
    folder = data.scan_folder(data.ensure_synthetic(tmp_path, {"train": 100, "validation": 2}))
    got = {}
    for fraction in (0.05, 0.1, 0.25, 0.5, 1.0):
        n = len(data.subsample(folder.splits["train"], fraction, 0, folder.class_names))
        head, finetune = (specs.budget(cfg, r, n) for r in ("frozen", "finetune"))
        got[fraction] = (n, head.steps_per_epoch, head.epochs, finetune.epochs, head.source)
    assert got == {
        0.05: (10, 1, 630, 126, "steps_budget"),
        0.1: (20, 1, 630, 126, "steps_budget"),
        0.25: (50, 2, 315, 63, "steps_budget"),
        0.5: (100, 4, 158, 32, "steps_budget"),
        1.0: (200, 7, 90, 18, "steps_budget"),
    }
    assert specs.budget(cfg, "scratch", 200) == stopping.Budget(4, 7, "epochs")  # no budget: the key
    # the data_fraction study as recorded (step budgets): 100% of 2,000 photographs kept the 10 + 2 epochs it had
    recorded = make("+experiment=data_fraction", "steps_budget={scratch:null,head:630,finetune:126}")
    assert [specs.budget(recorded, r, 2000).epochs for r in ("frozen", "finetune")] == [10, 2]
    assert [specs.budget(recorded, r, 200).epochs for r in ("frozen", "finetune")] == [90, 18]


def test_bad_rule_and_budget_values_are_named():
    found = config.problems(
        make(
            "early_stopping.patience=0", "early_stopping.min_delta=-0.1", "steps_budget.head=0", "backbone.weights=null"
        )
    )
    assert "early_stopping.patience=0 must be >= 1 (epochs without improvement)" in found
    assert "early_stopping.min_delta=-0.1 must be >= 0" in found
    assert any(p.startswith("steps_budget.head=0 must be >= 1") for p in found), found
    assert config.problems(make("early_stopping.enabled=true", "steps_budget.head=5", "backbone.weights=null")) == []


def test_the_head_phase_cache_key_follows_the_rule_and_the_epochs_it_gets(tmp_path):
    photos = data.ensure_synthetic(tmp_path, {"train": 8, "validation": 2})

    def key(*overrides: str) -> str:
        off = ("early_stopping.enabled=false", "epochs.head=10")  # the defaults this test was written against
        job = prepare(make("data=folder", f"data.path={photos}", "backbone.weights=null", "batch_size=4", *off,
                           *overrides))  # fmt: skip
        return features.cache_keys(job).states["frozen"]

    base = key()
    assert key("early_stopping.patience=9") == base  # an off rule trains as any off rule
    enabled = key("early_stopping.enabled=true")
    assert enabled != base and key("early_stopping.enabled=true", "early_stopping.patience=9") != enabled
    assert key("early_stopping.enabled=true", "early_stopping.monitor=val_acc") != enabled
    # 16 images / 4 = 4 steps per epoch: a 40-step budget is 10 epochs, the same head phase
    assert key("steps_budget.head=40") == base != key("steps_budget.head=44")


@pytest.mark.slow
def test_stop_reason_best_epoch_and_budget_are_recorded(tmp_path, store):
    """Through the CLI, two jobs: a 12-step budget on 6 training images in batches of 2 is 4 epochs per phase;
    with an improvement threshold no epoch can meet, the rule stops each phase after 1 + patience epochs, at
    its first epoch as the best, and fine-tuning's epochs continue after those the head phase ran."""
    photos = data.ensure_synthetic(tmp_path / "gen", {"train": 6, "validation": 3, "test": 3})
    args = tiny_job(store, photos, "data_fraction=0.5", "batch_size=2", "precision=auto", "regimes=[frozen,finetune]")
    args += ["steps_budget.head=12", "steps_budget.finetune=12", "early_stopping.patience=1"]
    args += ["early_stopping.min_delta=100", "early_stopping.enabled=false,true"]
    proc = run_cli("-m", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.log[-3000:]
    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(experiment_names=["default"], filter_string="tags.run_kind = 'regime'")
    got = {
        (row["tags.regime"], row["params.early_stopping.enabled"]): (
            row["params.epochs_max"],
            row["params.steps_per_epoch"],
            row["tags.epochs_from"],
            row["metrics.epochs_run"],
            row["metrics.best_epoch"],
            row["tags.stopped"],
        )
        for _, row in runs.iterrows()
    }
    for regime in ("frozen", "finetune"):
        off = got[regime, "False"]
        assert off[:4] == ("4", "3", "steps_budget", 4.0) and off[5] == "max_epochs", got
    assert 0 <= got["frozen", "False"][4] <= 3 and 4 <= got["finetune", "False"][4] <= 7, got
    assert got["frozen", "True"] == ("4", "3", "steps_budget", 2.0, 0.0, "early"), got
    assert got["finetune", "True"] == ("4", "3", "steps_budget", 2.0, 2.0, "early"), got
    early = runs[(runs["tags.regime"] == "finetune") & (runs["params.early_stopping.enabled"] == "True")]
    steps = [m.step for m in mlflow.MlflowClient().get_metric_history(early.run_id.iloc[0], "val_loss")]
    assert steps == [2, 3], steps  # the curve continues after the head phase's 2 epochs
    # the report says which rule each row used: the rule varies (a column), the budget does not (the caption)
    from harness import report

    long = report.results_section(report.summarize(report.load_runs(store, "default")))
    rows = {(r["stopping"], r["regime"]): r["epochs run"] for _, r in long.frame.iterrows()}
    assert rows == {
        ("off", "frozen"): "4",
        ("off", "fine-tuned"): "4",
        ("val_loss, patience 1, min_delta 100.0", "frozen"): "2 (1 early)",
        ("val_loss, patience 1, min_delta 100.0", "fine-tuned"): "2 (1 early)",
    }, rows
    assert "budget=steps head 12, finetune 12" in long.caption, long.caption
    assert "epochs_head" not in long.caption and "epochs_finetune" not in long.caption  # the budget decided
    jobs = mlflow.search_runs(experiment_names=["default"], filter_string="tags.run_kind = 'job'")
    assert set(jobs["tags.precision_used"]) == {"fp32"}  # precision=auto: MobileNetV2 is slower in bf16
    # the subsample trained on is the nested one, and is still listed file by file with each job
    folder = data.scan_folder(photos)
    half = data.subsample(folder.splits["train"], 0.5, 0, folder.class_names)
    expected = sorted(str(f.relative_to(folder.root)) for f in half.files)
    for run_id in jobs.run_id:
        listed = mlflow.artifacts.load_text(f"runs:/{run_id}/data/train_files.csv").splitlines()
        assert listed[0] == "file,label,sha256" and sorted(line.split(",")[0] for line in listed[1:]) == expected


@pytest.mark.slow  # trains a job twice
def test_a_rerun_and_a_cached_head_phase_reach_the_same_decision(tmp_path):
    """Resume after a kill re-runs a phase from its start, or reuses the cached whole head phase: both must end
    where the uninterrupted run ended (same epochs, best epoch, reason, weights, epoch fine-tuning continues at)."""
    import tensorflow as tf

    from harness.training import backbones

    tf.config.experimental.enable_op_determinism()  # as configure_runtime does for every job
    cfg = make(
        "backbone=mobilenetv2",
        "backbone.weights=null",
        "backbone.image_size=32",
        "epochs.head=8",
        "head_lr=1e-2",
        "batch_size=4",
        "early_stopping.enabled=true",
        "early_stopping.patience=1",
    )
    folder = data.scan_folder(data.ensure_synthetic(tmp_path / "gen", {"train": 8, "validation": 4, "test": 4}))
    splits = folder.splits
    arrays = Arrays(
        {s: data.load_images(v.files, 32) for s, v in splits.items()}, {s: v.labels for s, v in splits.items()}, 2
    )
    runs = []
    for _ in range(2):
        keras.utils.set_random_seed(0)
        base = backbones.build("mobilenetv2", None, 32)
        trainer = Trainer(2, 4, 0, "rmsprop", None, lambda regime, first: [], rule=stopping.Rule.from_cfg(cfg))
        result = frozen.train(Context(Recipe.from_cfg(config.convert(cfg)), arrays, trainer, lambda base=base: base))
        runs.append((result, result.state))
    (first, state), (again, state_again) = runs
    assert first.outcome == again.outcome and first.history == again.history and first.test == again.test
    assert first.outcome.stopped == "early" and state.next_epoch == first.outcome.epochs_run < 8, first.outcome
    frozen.save(first, tmp_path)
    again_ctx = Context(Recipe.from_cfg(config.convert(cfg)), arrays, trainer, lambda: state_again.base)
    cached = frozen.restore(again_ctx, tmp_path)
    cached_state = cached.state
    assert cached.outcome == first.outcome and cached_state.next_epoch == state.next_epoch
    for a, b in zip(cached_state.head.get_weights(), state.head.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
