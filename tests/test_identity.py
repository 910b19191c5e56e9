"""A job is named by what it computes: photographs, weights and result-changing config, by content."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pytest
from conftest import run_cli, tiny_job
from hydra import compose, initialize_config_dir

from harness import data
from harness.jobs import identity
from harness.jobs.cache import make_key
from harness.jobs.inputs import prepare
from harness.paths import conf_dir


def make(*overrides: str):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture
def photos(tmp_path) -> Path:
    return data.ensure_synthetic(tmp_path / "gen", {"train": 6, "validation": 3, "test": 3})


def edit(photo: Path) -> None:
    """Re-save a photograph with a corner painted over, under the same name: what a person editing it does."""
    from PIL import Image

    with Image.open(photo) as img:
        img = img.convert("RGB")
    img.paste((255, 0, 0), (0, 0, 8, 8))
    img.save(photo, format="JPEG", quality=90)


def job_id(folder: Path, *overrides: str) -> str:
    return prepare(make("data=folder", f"data.path={folder}", "backbone.weights=null", *overrides)).identity


def test_the_same_photographs_elsewhere_are_the_same_job(tmp_path, photos):
    moved = shutil.copytree(photos, tmp_path / "another" / "mount")
    assert job_id(moved) == job_id(photos)


def test_an_edited_photograph_at_the_same_path_is_a_new_job(photos):
    before = job_id(photos)
    edit(photos / "train" / "disks" / "disks.0.jpg")
    assert job_id(photos) != before


def test_a_renamed_class_is_a_new_job(tmp_path, photos):
    renamed = shutil.copytree(photos, tmp_path / "renamed")
    for split in ("train", "validation", "test"):
        (renamed / split / "squares").rename(renamed / split / "boxes")
    assert job_id(renamed) != job_id(photos)


def test_where_results_go_does_not_change_the_identity_but_what_is_computed_does(tmp_path, photos):
    base = job_id(photos)
    same = (
        "study=other",
        f"tracking_uri=sqlite:///{tmp_path}/x.db",
        "log_model=true",
        f"cache_dir={tmp_path}/c",
        "cache=false",
        "threads=1",
        "data.on_bad_file=stop",
        "sweep_run=abc",
        "wait_for_others=true",
        "data.max_pixels=5000000",
        "lease_s=600",
        "heartbeat_s=10",
        '+targets.frozen=">= 0.97"',
    )
    for override in same:
        assert job_id(photos, override) == base, override
    for override in ("seed=1", "unfreeze_at=block4_conv1", "lr=1e-4", "data_fraction=0.5", "head=flatten"):
        assert job_id(photos, override) != base, override


def test_weights_are_named_by_content_not_path(tmp_path, photos):
    a = tmp_path / "a" / "w.h5"
    a.parent.mkdir()
    a.write_bytes(b"weights" * 1000)
    b = tmp_path / "b.h5"
    shutil.copy(a, b)
    c = tmp_path / "c.h5"
    c.write_bytes(b"other weights" * 1000)
    ids = {name: job_id(photos, f"backbone.weights={path}") for name, path in (("a", a), ("b", b), ("c", c))}
    assert ids["a"] == ids["b"] != ids["c"]
    assert ids["a"] != job_id(photos)  # random init is a different job


def test_cache_keys_change_with_the_producing_code(tmp_path, monkeypatch):
    package = tmp_path / "producer_pkg"
    package.mkdir()
    module = package / "decode.py"
    module.write_text("SCALE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(identity, "PRODUCERS", {"images": ("producer_pkg.decode",)})
    identity.code_identity.cache_clear()
    key = make_key("images", {"files": "x"})
    assert key == make_key("images", {"files": "x"}) != make_key("images", {"files": "y"})
    module.write_text("SCALE = 2\n")
    identity.code_identity.cache_clear()
    assert make_key("images", {"files": "x"}) != key
    identity.code_identity.cache_clear()


@pytest.mark.slow  # three CLI jobs
def test_resume_follows_content_across_paths_and_edits(tmp_path, store):
    """Through the CLI: a copy of the data elsewhere is skipped as FINISHED; an edited photo trains again."""
    photos = data.ensure_synthetic(tmp_path / "gen", {"train": 6, "validation": 3, "test": 3})
    first = run_cli(*tiny_job(store, photos), cwd=tmp_path)
    assert first.returncode == 0, first.log[-3000:]
    moved = shutil.copytree(photos, tmp_path / "elsewhere")
    again = run_cli(*tiny_job(store, moved), cwd=tmp_path)
    assert again.returncode == 0 and "skip: job" in again.log, again.log[-3000:]
    assert "other code" not in again.log

    mlflow.set_tracking_uri(store)
    jobs = mlflow.search_runs(experiment_names=["default"], filter_string="tags.run_kind = 'job'")
    mlflow.MlflowClient().set_tag(jobs.run_id.iloc[0], "code_digest", "an-older-version")
    older = run_cli(*tiny_job(store, moved), cwd=tmp_path)
    assert "skip: job" in older.log and "recorded with other code" in older.log, older.log[-3000:]

    edit(moved / "train" / "disks" / "disks.0.jpg")
    edited = run_cli(*tiny_job(store, moved), cwd=tmp_path)
    assert edited.returncode == 0 and "skip:" not in edited.log, edited.log[-3000:]
    jobs = mlflow.search_runs(experiment_names=["default"], filter_string="tags.run_kind = 'job'")
    assert len(jobs) == 2 and jobs["tags.job_identity"].nunique() == 2


# result_config digests of these configs (backbone.weights=null: no download or file digest involved), as
# computed by the code before early_stopping, steps_budget and the scratch settings existed: studies recorded
# then stay resumable. Jobs with the scratch regime are new jobs since its BatchNorm momentum changed.
# Since 2026-11-29 the defaults stop every phase on validation loss (patience 5) and allow 200 head epochs, so
# that a head converges on small data too; a job that keeps the old defaults keeps its old identity.
OLD_DEFAULTS = ("early_stopping.enabled=false", "epochs.head=10")
RECORDED = {
    OLD_DEFAULTS: "d929fc79e1c1bd31a09b9af9",
    ("+experiment=quickstart", *OLD_DEFAULTS): "aa45fe3b6154a7bc21290117",
    # the study as it was recorded then; it now stops every phase by validation (a new identity, as it should be)
    ("+experiment=tf_mobilenetv2", "early_stopping.enabled=false", "epochs={scratch:1,head:10,finetune:3}"): (
        "90576cd6cf75156a8f552ad2"
    ),
    # the study as it was recorded then (5 fractions of 10 head epochs under step budgets); redesigned since
    (
        "+experiment=data_fraction",
        "early_stopping.enabled=false",
        "epochs={scratch:30,head:10,finetune:2}",
        "steps_budget={scratch:null,head:630,finetune:126}",
    ): "a1b43d08bd0e4cafc44d77e3",  # fmt: skip
}


@pytest.mark.parametrize("overrides", list(RECORDED))
def test_new_options_at_their_defaults_keep_recorded_identities(overrides):
    cfg = make(*overrides, "backbone.weights=null", "regimes=[frozen,finetune]")
    assert "early_stopping" in cfg and "steps_budget" in cfg and "scratch" in cfg  # the keys exist
    assert identity.digest(identity.result_config(cfg)) == RECORDED[overrides]
    # off is off: the settings of a disabled rule, or of a regime the job does not run, change nothing
    off = make(
        *overrides,
        "backbone.weights=null",
        "regimes=[frozen,finetune]",
        "early_stopping.patience=7",
        "early_stopping.monitor=val_acc",
        "scratch.image_size=64",
        "scratch.model=small_convnet",
    )
    assert identity.digest(identity.result_config(off)) == RECORDED[overrides]


def test_scratch_settings_change_the_identity_of_jobs_that_train_scratch():
    digests = {
        o: identity.digest(identity.result_config(make("backbone.weights=null", *o)))
        for o in [(), ("scratch.image_size=64",), ("scratch.bn_momentum=null",), ("scratch.bn_momentum=0.99",)]
    }
    assert len(set(digests.values())) == len(digests), digests


def test_stopping_rule_and_step_budget_change_the_identity_when_on(photos):
    base = job_id(photos, "early_stopping.enabled=false")
    on = ("early_stopping.enabled=true", "steps_budget.head=100", "steps_budget.finetune=5")
    ids = {override: job_id(photos, "early_stopping.enabled=false", override) for override in on}
    assert base not in ids.values() and len(set(ids.values())) == len(on), ids
    enabled = "early_stopping.enabled=true"
    assert job_id(photos, enabled, "early_stopping.patience=7") != ids[enabled]
    assert job_id(photos) == ids[enabled]  # on by default now


@pytest.mark.parametrize("overrides", list(RECORDED))
def test_the_typed_config_names_a_job_as_the_composed_one_does(overrides):
    """The job receives the config converted once into the schema's dataclasses: its identity is the one the
    recorded studies have (the same plain data, choices as strings)."""
    from harness.config import load

    composed = make(*overrides, "backbone.weights=null", "regimes=[frozen,finetune]")
    typed = load(composed)
    assert identity.result_config(typed) == identity.result_config(composed)
    assert identity.digest(identity.result_config(typed)) == RECORDED[overrides]
