"""The dry run's cost estimate follows what each phase may run: step budgets, scratch's own size, the rule."""

from __future__ import annotations

from hydra import compose, initialize_config_dir

from harness import data
from harness.jobs import plan
from harness.jobs.inputs import prepare
from harness.paths import conf_dir


def estimate(photos, *overrides: str) -> float:
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                "data=folder",
                f"data.path={photos}",
                "backbone=mobilenetv2",
                "backbone.weights=null",
                *overrides,
            ],
        )
    return plan.estimate_seconds(prepare(cfg), set(), {"frozen"})


def test_estimate_counts_budgets_and_scratch_size(tmp_path):
    photos = data.ensure_synthetic(tmp_path / "gen", {"train": 8, "validation": 2, "test": 2})
    finetune = ("regimes=[frozen,finetune]", "batch_size=4", "epochs.finetune=10")  # 2 x 8 / 4 = 4 steps per epoch
    assert estimate(photos, *finetune, "steps_budget.finetune=20") == estimate(photos, *finetune, "epochs.finetune=5")
    scratch = ("regimes=[scratch]", "backbone.image_size=160")
    full, half = estimate(photos, *scratch), estimate(photos, *scratch, "scratch.image_size=80")
    assert half == full / 4, (full, half)


def test_augmented_jobs_hold_features_of_the_held_out_splits_only(tmp_path):
    photos = data.ensure_synthetic(tmp_path / "gen", {"train": 8, "validation": 2, "test": 2})
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        overrides = ["data=folder", f"data.path={photos}", "backbone=mobilenetv2", "backbone.weights=null"]
        plain = prepare(compose(config_name="config", overrides=[*overrides, "regimes=[frozen]", "head=flatten"]))
        augmented = prepare(
            compose(config_name="config", overrides=[*overrides, "regimes=[frozen]", "head=flatten", "augment=true"])
        )
    # 16 train + 4 validation + 4 test images; augmented, only the 8 held-out ones are staged
    assert plan.feature_bytes(augmented)["top"] * 24 == plan.feature_bytes(plain)["top"] * 8


def test_temporary_files_hold_the_pixels_a_regime_trains_on_at_its_own_size_and_every_array_without_a_cache(tmp_path):
    """$TMPDIR's share of the disk check: scratch's preprocessed pixels (float32, at scratch.image_size), never
    cached; with cache=false also everything the cache would have stored."""
    photos = data.ensure_synthetic(tmp_path / "gen", {"train": 8, "validation": 2, "test": 2})
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        base = ["data=folder", f"data.path={photos}", "backbone=mobilenetv2", "backbone.weights=null",
                f"cache_dir={tmp_path / 'cache'}", "backbone.image_size=96"]  # fmt: skip
        jobs = {
            name: prepare(compose(config_name="config", overrides=[*base, *overrides]))
            for name, overrides in {
                "scratch": ["regimes=[scratch]", "scratch.image_size=64"],
                "frozen": ["regimes=[frozen]"],
                "frozen uncached": ["regimes=[frozen]", "cache=false"],
            }.items()
        }
    assert plan.temporary_bytes(jobs["scratch"]) == {"pixels": 24 * 64 * 64 * 3 * 4}  # 16 + 4 + 4 images
    assert plan.temporary_bytes(jobs["frozen"]) == {}
    uncached = plan.temporary_bytes(jobs["frozen uncached"])
    assert uncached == plan.bytes_to_write(jobs["frozen"]) and uncached
