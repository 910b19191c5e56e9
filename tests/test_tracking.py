"""What the MLflow record looks like to a person browsing it: experiment kind, readable run names."""

from __future__ import annotations

import json
import multiprocessing

import mlflow
import numpy as np
import pytest
from conftest import run_cli, tiny_job
from hydra import compose, initialize_config_dir

from harness import data, tracking
from harness.paths import conf_dir


def make(*overrides: str):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_a_study_is_a_model_training_experiment_new_or_old(store):
    uri = tracking.connect(store)
    new = tracking.ensure_experiment("new", uri)
    assert mlflow.get_experiment(new).tags["mlflow.experimentKind"] == "custom_model_development"
    old = mlflow.create_experiment("old")  # as studies recorded before the tag existed
    assert tracking.ensure_experiment("old", uri) == old
    assert mlflow.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"


def test_regime_runs_say_what_they_trained():
    cfg = make("backbone=mobilenetv2", "unfreeze_at=block_14_expand", "lr=1e-5", "seed=3")
    assert tracking.regime_run_name(cfg, "finetune") == "finetune mobilenetv2 block_14_expand lr=1e-05 seed=3"
    assert tracking.regime_run_name(cfg, "frozen").startswith("frozen mobilenetv2 head_lr=")
    half = make("data_fraction=0.5")
    assert tracking.regime_run_name(half, "scratch").endswith("data_fraction=0.5 seed=0")


def test_run_tags_are_the_fields_the_schema_marks_searchable():
    """The tags to filter runs by come from the schema (`run_tag` fields), not from a list kept beside it."""
    from harness.config import load
    from harness.config.schema import RUN_TAGS

    assert RUN_TAGS == {
        "backbone": "backbone.name",
        "study": "study",
        "unfreeze_at": "unfreeze_at",
        "lr": "lr",
        "data_fraction": "data_fraction",
        "seed": "seed",
    }
    cfg = load(make("backbone=mobilenetv2", "unfreeze_at=block_14_expand", "lr=1e-5", "seed=3", "study=s"))
    tags = tracking.run_tags(cfg, "abc", "deadbeef", "regime", "finetune")
    assert {k: tags[k] for k in RUN_TAGS} == {
        "backbone": "mobilenetv2",
        "study": "s",
        "unfreeze_at": "block_14_expand",
        "lr": "1e-05",
        "data_fraction": "1.0",
        "seed": "3",
    }
    assert tags["regime"] == "finetune" and tags["run_kind"] == "regime" and tags["job_identity"] == "abc"


def test_job_run_names_leave_out_stores_and_shorten_paths_to_fit_postgresql():
    name = tracking.run_name(["seed=1", "tracking_uri=http://h:5000", "cache_dir=/c", f"data.path=/{'x' * 300}/photos"])
    assert name == "seed=1 data.path=…/photos"
    long = tracking.run_name([f"unfreeze_at={'b' * 400}"])
    assert len(long) == tracking.MAX_RUN_NAME and long.endswith("…")


@pytest.mark.slow  # trains a job through the CLI
def test_a_job_logs_its_splits_as_datasets_and_its_training_files(tmp_path, store):
    photos = data.ensure_synthetic(tmp_path / "gen", {"train": 6, "validation": 3, "test": 3})
    proc = run_cli(*tiny_job(store, photos), cwd=tmp_path)
    assert proc.returncode == 0, proc.log[-3000:]
    mlflow.set_tracking_uri(store)
    jobs = mlflow.search_runs(experiment_names=["default"], filter_string="tags.run_kind = 'job'", output_format="list")
    job = jobs[0]
    inputs = {i.tags[0].value: i.dataset for i in job.inputs.dataset_inputs}  # context -> dataset
    assert sorted(inputs) == ["test", "train", "validation"]
    assert inputs["train"].name == f"{photos.name}/train" and inputs["train"].digest
    assert json.loads(inputs["validation"].profile)["num_rows"] == 6
    listed = mlflow.artifacts.load_text(f"runs:/{job.info.run_id}/data/train_files.csv").splitlines()
    assert listed[0] == "file,label,sha256" and len(listed) == 1 + 12
    assert sorted({line.split(",")[1] for line in listed[1:]}) == ["disks", "squares"]
    # the frozen run's estimates of how its training features transfer, before the head trained on them
    frozen = mlflow.search_runs(experiment_names=["default"], filter_string="tags.regime = 'frozen'").iloc[0]
    assert np.isfinite(frozen["metrics.logme"]) and 0 <= frozen["metrics.knn_loo_acc"] <= 1


def _open_study_and_log_data(store: str, photos: str, start, out) -> None:
    """One of several processes opening the same new study and logging the same new splits at once."""
    folder = data.scan_folder(photos)
    identities = {name: data.split_identity(split, folder.class_names) for name, split in folder.splits.items()}
    uri = tracking.connect(store)
    start.wait(timeout=60)
    experiment_id = tracking.ensure_experiment("race", uri)
    with mlflow.start_run(experiment_id=experiment_id):
        tracking.log_datasets(folder.root, folder.splits, list(folder.class_names), identities)
    out.put(experiment_id)


@pytest.mark.slow  # parallel processes, each importing the harness
def test_parallel_jobs_opening_one_new_study_and_logging_one_new_dataset_all_succeed(tmp_path, store):
    """MLflow's SQL store looks an experiment or dataset up, then inserts it: parallel first users collide."""
    photos = data.ensure_synthetic(tmp_path / "gen", {"train": 2, "validation": 1, "test": 1})
    mlflow.MlflowClient(store).search_experiments()  # the schema exists before the race, as a sweep makes it first
    context = multiprocessing.get_context("spawn")
    start, out = context.Barrier(6), context.Queue()
    args = (store, str(photos), start, out)
    workers = [context.Process(target=_open_study_and_log_data, args=args) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [w.exitcode for w in workers] == [0] * 6
    assert len({out.get(timeout=5) for _ in workers}) == 1
    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(experiment_names=["race"], output_format="list")
    assert len(runs) == 6 and all(len(r.inputs.dataset_inputs) == 3 for r in runs)
