"""The fine-tuning strategies added as regime modules: FT from a new head (`finetune_direct`) and L2-SP (`l2sp`), next
to LP (`frozen`) and LP-FT (`finetune`), in-process on generated images and random weights."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from hydra import compose, initialize_config_dir

from harness import data
from harness.config import convert
from harness.jobs import plan
from harness.jobs.inputs import prepare
from harness.paths import conf_dir
from harness.training import backbones, models, specs
from harness.training.regime import Context, Recipe
from harness.training.regimes import finetune, finetune_direct, frozen, l2sp
from harness.training.trainer import Arrays, Trainer

SIZE = 32
BOUNDARY = "block_14_expand"


def make(*overrides: str):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return convert(compose(config_name="config", overrides=list(overrides)))


@pytest.fixture(scope="module")
def arrays(tmp_path_factory) -> Arrays:
    root = data.ensure_synthetic(tmp_path_factory.mktemp("gen"), {"train": 12, "validation": 6, "test": 6})
    folder = data.scan_folder(root)
    splits = folder.splits
    return Arrays(
        {s: data.load_images(v.files, SIZE) for s, v in splits.items()}, {s: v.labels for s, v in splits.items()}, 2
    )


def strategies_cfg(*overrides: str):
    return make(
        "backbone=mobilenetv2", "backbone.weights=null", f"backbone.image_size={SIZE}", f"unfreeze_at={BOUNDARY}",
        "epochs.head=2", "epochs.finetune=2", "early_stopping.enabled=false", "head_lr=1e-2", "lr=1e-3",
        "batch_size=4", *overrides,
    )  # fmt: skip


def job_context(cfg, arrays: Arrays) -> Context:
    """As `harness.jobs.job.train` builds it: every regime gets the backbone at its loaded weights."""
    keras.utils.set_random_seed(cfg.seed)
    base = backbones.build("mobilenetv2", None, SIZE)
    weights = base.get_weights()

    def pristine():
        base.set_weights(weights)
        backbones.set_trainable(base, True)
        return base

    return Context(Recipe.from_cfg(cfg), arrays, Trainer(2, 4, 0, "rmsprop", None, lambda r, f: []), pristine)


@pytest.mark.slow  # fine-tunes twice
def test_l2sp_at_zero_strength_is_finetuning_from_the_same_head_even_after_finetuning_ran(arrays):
    """Both start from the frozen regime's trained state; fine-tuning trains the backbone in place, so l2sp must get
    the state back as the head phase left it. With alpha = beta = 0 it is fine-tuning itself, number for number."""
    tf.config.experimental.enable_op_determinism()  # as configure_runtime does for every job
    cfg = strategies_cfg("l2sp.alpha=0", "l2sp.beta=0")
    ctx = job_context(cfg, arrays)
    ctx.start = frozen.train(ctx).state
    tuned = finetune.train(ctx)
    penalised = l2sp.train(ctx)
    assert penalised.first_epoch == tuned.first_epoch == 2  # both continue after the head phase's 2 epochs
    np.testing.assert_allclose(penalised.history["loss"], tuned.history["loss"], rtol=1e-6)
    np.testing.assert_allclose(penalised.history["val_loss"], tuned.history["val_loss"], rtol=1e-6)
    assert penalised.test == pytest.approx(tuned.test, rel=1e-6)


@pytest.mark.slow  # fine-tunes twice
def test_the_l2sp_penalty_pulls_the_trained_weights_toward_their_start(arrays):
    """A strong alpha keeps the unfrozen layers nearer the weights fine-tuning started from than no penalty does."""
    distance = {}
    for alpha in ("0", "1000"):
        cfg = strategies_cfg(f"l2sp.alpha={alpha}", "l2sp.beta=0", "lr=1e-2")
        ctx = job_context(cfg, arrays)
        ctx.start = frozen.train(ctx).state
        start = ctx.start.base.get_layer("block_15_project").get_weights()[0].copy()
        l2sp.train(ctx)
        distance[alpha] = float(np.linalg.norm(ctx.start.base.get_layer("block_15_project").get_weights()[0] - start))
    assert 0 < distance["1000"] < 0.5 * distance["0"], distance


def test_the_penalty_counts_the_pretrained_weights_from_their_start_and_the_head_kernels_from_zero():
    pretrained, kernel = keras.Variable(np.ones(3, "float32")), keras.Variable(np.full(2, 2.0, "float32"))
    term = l2sp.penalty([pretrained], [kernel], alpha=0.1, beta=0.01)
    assert float(term()) == pytest.approx(0.5 * 0.01 * 8.0)  # at the start only the head's term
    pretrained.assign(np.full(3, 3.0, "float32"))
    assert float(term()) == pytest.approx(0.5 * 0.1 * 12.0 + 0.5 * 0.01 * 8.0)


def test_a_training_penalty_leaves_validation_and_test_losses_alone():
    """The penalty is added while training only: evaluate reports the data loss, fit's loss includes it."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    out = models.TrainingPenalty(lambda: keras.ops.convert_to_tensor(5.0))(keras.layers.Dense(1, "sigmoid")(inputs))
    model = keras.Model(inputs, out)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="binary_crossentropy")
    x, y = np.ones((8, 4), "float32"), np.ones((8, 1), "float32")
    evaluated = model.evaluate(x, y, verbose=0)
    trained = model.fit(x, y, epochs=1, batch_size=8, verbose=0).history["loss"][0]
    assert trained == pytest.approx(evaluated + 5.0, rel=1e-5)


@pytest.mark.slow  # fine-tunes
def test_finetune_direct_trains_a_new_head_and_the_upper_backbone_from_the_first_step(arrays):
    """No head phase: epochs from 0 (the curves start with a validation before training), as many as the head and
    fine-tuning phases together; the layers below the boundary and every BatchNorm statistic stay as loaded."""
    cfg = strategies_cfg()
    ctx = job_context(cfg, arrays)
    base = ctx.pretrained()
    bn = [layer for layer in base.layers if isinstance(layer, keras.layers.BatchNormalization)]
    moving = {layer.name: [w.copy() for w in layer.get_weights()[2:]] for layer in bn}
    below = base.get_layer("block_13_project").get_weights()[0].copy()
    above = base.get_layer("block_15_project").get_weights()[0].copy()
    result = finetune_direct.train(ctx)
    assert result.first_epoch == 0 and result.initial is not None
    assert result.budget.epochs == len(result.history["loss"]) == 4  # epochs.head + epochs.finetune
    np.testing.assert_array_equal(below, base.get_layer("block_13_project").get_weights()[0])
    assert not np.array_equal(above, base.get_layer("block_15_project").get_weights()[0])
    for layer in bn:
        for before, after in zip(moving[layer.name], layer.get_weights()[2:], strict=True):
            np.testing.assert_array_equal(before, after, err_msg=f"{layer.name} moving statistics changed")


def test_the_strategies_share_the_boundary_features_and_budgets_in_the_plan(tmp_path):
    """FT, LP-FT and L2-SP train above one cut (one cache entry); FT's budget is the head's and fine-tuning's."""
    photos = data.ensure_synthetic(tmp_path, {"train": 8, "validation": 2, "test": 2})
    cfg = make(
        "data=folder", f"data.path={photos}", "backbone=mobilenetv2", "backbone.weights=null",
        "regimes=[frozen,finetune,finetune_direct,l2sp]", "steps_budget.head=20", "steps_budget.finetune=10",
        "batch_size=4",
    )  # fmt: skip
    assert plan.feature_cuts(cfg) == [backbones.POOLED, cfg.unfreeze_at]
    job = prepare(cfg)  # 8 generated images per class: 16 for training, 4 steps an epoch
    budgets = {r: specs.budget(cfg, r, len(job.train)).epochs for r in specs.NAMES if r != "scratch"}
    assert budgets == {"frozen": 5, "finetune": 3, "finetune_direct": 8, "l2sp": 3}  # ceil(20 / 4) + ceil(10 / 4)
    only = {r: plan.estimate_seconds(prepare(make(*job_overrides(photos, r))), set(), set()) for r in budgets}
    assert only["finetune"] > 0 and only["finetune_direct"] == pytest.approx(8 / 3 * only["finetune"])  # 8 epochs
    assert plan.estimate_seconds(job, set(), set()) == pytest.approx(only["finetune"] * 2 + only["finetune_direct"])


def job_overrides(photos, regime: str) -> list[str]:
    regimes = f"[frozen,{regime}]" if specs.spec(regime).starts_from else f"[{regime}]"
    return ["data=folder", f"data.path={photos}", "backbone=mobilenetv2", "backbone.weights=null",
            f"regimes={regimes}", "steps_budget.head=20", "steps_budget.finetune=10", "batch_size=4"]  # fmt: skip


def test_the_new_regimes_are_compared_with_what_they_claim_to_beat():
    pairs = specs.pairs()
    classic = [("finetune", "frozen"), ("frozen", "scratch"), ("finetune", "scratch")]
    assert [p for p in pairs if p in classic] == classic  # in the order reports listed them before
    assert {("finetune_direct", "finetune"), ("l2sp", "finetune"), ("l2sp", "frozen")} <= set(pairs)
    assert specs.headline() == ("finetune", "frozen")


@pytest.mark.slow
def test_a_sweep_of_the_four_strategies_records_and_reports_each(tmp_path):
    """Through the CLI, two seeds: every strategy a regime run of its own, FT and L2-SP reusing the head phase's
    cut features, and the report comparing FT and L2-SP with LP-FT, labelled and coloured from their specs."""
    import mlflow
    from conftest import run_cli, tiny_job

    from harness import report

    photos = data.ensure_synthetic(tmp_path / "gen", {"train": 8, "validation": 4, "test": 4})
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = tiny_job(store, photos, "regimes=[frozen,finetune,finetune_direct,l2sp]", f"unfreeze_at={BOUNDARY}",
                    "epochs.finetune=1", f"cache_dir={tmp_path / 'cache'}", "study=strategies")  # fmt: skip
    proc = run_cli("-m", "seed=0,1", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.log[-4000:]
    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(experiment_names=["strategies"], filter_string="tags.run_kind = 'regime'")
    assert sorted(runs["tags.regime"].value_counts().items()) == [
        ("finetune", 2), ("finetune_direct", 2), ("frozen", 2), ("l2sp", 2)
    ]  # fmt: skip
    assert set(runs.status) == {"FINISHED"} and set(runs["params.l2sp.alpha"]) == {"0.1"}
    direct = runs[runs["tags.regime"] == "finetune_direct"]
    assert set(direct["params.epochs_max"]) == {"2"}  # epochs.head=1 + epochs.finetune=1
    result = report.build_report(store, "strategies", out=tmp_path / "out", log_to_parent=False)
    comparisons = pd.read_csv(tmp_path / "out" / "comparisons.csv")
    assert {"FT (new head) − fine-tuned", "L2-SP − fine-tuned", "L2-SP − frozen", "fine-tuned − frozen"} <= set(
        comparisons["comparison"]
    )
    md = (tmp_path / "out" / "results.md").read_text()
    assert "FT (new head)" in md and "L2-SP" in md and result.table.loc[0, "l2sp_n"] == 2


def test_the_strategies_study_is_fair_as_its_config_states():
    """Pinned before the study runs: the four strategies at one boundary, fixed steps and no stopping rule, FT with
    as many steps as LP-FT in all, the lr grid and seeds of the selection stage, the targets."""
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        raw = compose(config_name="config", overrides=["+experiment=fine_tuning_strategies"], return_hydra_config=True)
    cfg = convert(raw)
    assert [str(r) for r in cfg.regimes] == ["frozen", "finetune", "finetune_direct", "l2sp"]
    assert not cfg.early_stopping.enabled and cfg.unfreeze_at == "block_14_expand"
    n_train = 2000  # the shared photographs' training split
    steps = {r: specs.budget(cfg, r, n_train).epochs * 63 for r in ("frozen", "finetune", "finetune_direct")}
    assert steps == {"frozen": 630, "finetune": 315, "finetune_direct": 945}
    assert dict(raw.hydra.sweeper.params) == {"lr": "1.0e-5,1.0e-4,1.0e-3", "seed": "0,1"}
    assert cfg.targets == {
        "finetune_direct_minus_finetune": "<= 0", "l2sp_minus_finetune": "> 0", "finetune_minus_frozen": "> 0"
    }  # fmt: skip


@pytest.mark.slow  # trains every strategy
def test_each_strategy_has_its_own_learning_rate_following_finetunings_unless_set(arrays):
    """One job trains every strategy at the rate chosen for it: `finetune_direct.lr` and `l2sp.lr` follow `lr`
    unless set, are checked like it, and are the rates the phases train at."""
    follows = strategies_cfg("lr=3e-4")
    assert follows.finetune_direct.lr == follows.l2sp.lr == 3e-4
    own = strategies_cfg("lr=3e-4", "finetune_direct.lr=1e-2", "l2sp.lr=1e-5")
    assert (own.lr, own.finetune_direct.lr, own.l2sp.lr) == (3e-4, 1e-2, 1e-5)
    from harness.config import problems

    assert problems(strategies_cfg("finetune_direct.lr=0", "l2sp.lr=-1")) == [
        "finetune_direct.lr=0.0 must be > 0 (e.g. finetune_direct.lr=1e-4)",
        "l2sp.lr=-1.0 must be > 0 (e.g. l2sp.lr=1e-4)",
    ]
    moved = {}
    for rate in ("1e-12", "1e-2"):  # 1e-12: so small that nothing moves, whatever `lr` (1e-3) says
        ctx = job_context(strategies_cfg(f"finetune_direct.lr={rate}"), arrays)
        base = ctx.pretrained()
        above = base.get_layer("block_15_project").get_weights()[0].copy()
        finetune_direct.train(ctx)  # trains `base` in place
        moved[rate] = float(np.abs(base.get_layer("block_15_project").get_weights()[0] - above).max())
    assert moved["1e-12"] < 1e-6 < moved["1e-2"], moved
