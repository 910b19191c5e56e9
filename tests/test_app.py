"""`python -m harness` end to end: real Hydra multiruns on real photographs into a real MLflow store."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from conftest import copy_small, run_cli, small_mobilenet

pytestmark = pytest.mark.slow


def runs(store: str, study: str):
    mlflow.set_tracking_uri(store)
    return mlflow.search_runs(experiment_names=[study], max_results=1000)


def test_multirun_records_sweep_job_regime_tree(tmp_path, store, cats_dogs, mobilenet_weights):
    boundaries = ["block_15_expand", "block_16_expand"]
    proc = run_cli(
        "-m",
        f"unfreeze_at={','.join(boundaries)}",
        *small_mobilenet(mobilenet_weights, store, "study=e2e"),
        "scratch.model=small_convnet",  # the scratch regime's cheapest model: this test is about the record
        "scratch.image_size=48",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.log[-4000:]
    assert "frozen   done: test_acc" in proc.log and "finetune epoch   2/2" in proc.log

    df = runs(store, "e2e")
    sweep = df[df["tags.run_kind"] == "sweep"]
    jobs = df[df["tags.run_kind"] == "job"]
    regimes = df[df["tags.run_kind"] == "regime"]
    assert len(sweep) == 1 and len(jobs) == 2 and len(regimes) == 6
    assert set(df["status"]) == {"FINISHED"}
    sweep_id = sweep.run_id.iloc[0]
    assert set(jobs["tags.mlflow.parentRunId"]) == {sweep_id}
    assert set(regimes["tags.mlflow.parentRunId"]) == set(jobs.run_id)
    assert sorted(jobs["tags.unfreeze_at"]) == boundaries
    assert jobs["tags.job_identity"].nunique() == 2

    tags = ("regime", "backbone", "unfreeze_at", "lr", "data_fraction", "seed", "job_identity", "code_digest")
    for tag in (*tags, "git_commit"):
        assert regimes[f"tags.{tag}"].notna().all(), tag
    assert set(regimes["tags.backbone"]) == {"mobilenetv2"}
    assert set(regimes["tags.data_fraction"]) == {"0.1"}
    assert regimes["params.data_fraction"].notna().all() and regimes["params.backbone.weights"].notna().all()
    assert jobs["params.data.train_files_hash"].nunique() == 1  # same seed, same subsample
    assert set(jobs["params.data.n_train"]) == {"200"}

    client = mlflow.MlflowClient()
    for _, run in regimes.iterrows():
        regime = run["tags.regime"]
        first = 1 if regime == "finetune" else 0  # fine-tuning continues after the head phase
        for metric in ("loss", "acc", "val_loss", "val_acc"):
            history = client.get_metric_history(run.run_id, metric)
            # new weights (scratch, the head) are validated before training too: epoch 0, step -1
            before = [-1] if metric.startswith("val_") and regime != "finetune" else []
            assert sorted(m.step for m in history) == [*before, first], (regime, metric)
        assert run["metrics.train_time_s"] > 0
        assert [a.path for a in client.list_artifacts(run.run_id)] == ["curves.png", "predictions"]
        assert [a.path for a in client.list_artifacts(run.run_id, "predictions")] == ["predictions/test.csv"]
        curves = Path(client.download_artifacts(run.run_id, "curves.png", str(tmp_path / run.run_id)))
        assert curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for job_id in jobs.run_id:
        names = {a.path for a in client.list_artifacts(job_id)}
        assert {"config.yaml", "overrides.txt", "environment.json"} <= names

    by_regime = regimes.groupby("tags.regime")["metrics.test_acc"].mean()
    assert by_regime["frozen"] > 0.8, by_regime  # real ImageNet features separate cats from dogs
    assert by_regime["frozen"] > by_regime["scratch"] + 0.2, by_regime


def test_vgg16_runs_from_scratch_weights(tmp_path, store, cats_dogs):
    photos = copy_small(cats_dogs, tmp_path / "photos")
    proc = run_cli(
        "data=folder",
        f"data.path={photos}",
        "backbone.weights=null",
        "backbone.image_size=48",
        "epochs.scratch=1",
        "epochs.head=1",
        "epochs.finetune=1",
        "study=vgg",
        f"tracking_uri={store}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.log[-4000:]
    df = runs(store, "vgg")
    regimes = df[df["tags.run_kind"] == "regime"]
    assert sorted(regimes["tags.regime"]) == ["finetune", "frozen", "scratch"]
    assert set(regimes["tags.unfreeze_at"]) == {"block5_conv1"}
    assert set(df["status"]) == {"FINISHED"}


def test_unknown_layer_stops_before_anything_is_recorded(tmp_path, store):
    proc = run_cli("unfreeze_at=block6_conv1", f"tracking_uri={store}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "unfreeze_at='block6_conv1' is not a layer of backbone vgg16" in proc.log
    assert "block5_conv3" in proc.log  # lists the valid names
    assert not Path(store.removeprefix("sqlite:///")).exists()


def test_quickstart_runs_offline_and_logs_loadable_models(tmp_path, store):
    import numpy as np

    import harness.training.models  # noqa: F401 - registers the preprocessing layer, as the README tells users

    proc = run_cli(
        "+experiment=quickstart", f"tracking_uri={store}", "regimes=[frozen,finetune]", "log_model=true", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.log[-4000:]
    df = runs(store, "quickstart")
    assert sorted(df["tags.run_kind"]) == ["job", "regime", "regime"]
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    out = {}
    for _, run in df[df["tags.run_kind"] == "regime"].iterrows():
        model = mlflow.keras.load_model(f"runs:/{run.run_id}/model")
        out[run["tags.regime"]] = model.predict(images, verbose=0)
        assert out[run["tags.regime"]].shape == (4, 1)
    assert not np.allclose(out["frozen"], out["finetune"])  # frozen was saved before fine-tuning moved the weights


def test_three_classes_with_augmentation(tmp_path, store, cats_dogs, mobilenet_weights):
    """Softmax head for > 2 classes, and the augmentation layer in the graph (the whole stack runs per training
    batch)."""
    import shutil

    from conftest import copy_small

    from harness.data import ensure_synthetic

    root = copy_small(cats_dogs, tmp_path / "three", {"train": 12, "validation": 6, "test": 6})
    disks = ensure_synthetic(tmp_path / "gen", {"train": 12, "validation": 6, "test": 6})
    for split in ("train", "validation", "test"):
        shutil.copytree(disks / split / "disks", root / split / "disks")
    proc = run_cli(
        "data=folder",
        f"data.path={root}",
        "backbone=mobilenetv2",
        f"backbone.weights={mobilenet_weights}",
        "backbone.image_size=64",
        "regimes=[frozen,finetune]",
        "unfreeze_at=block_16_expand",
        "augment=true",
        "epochs.head=2",
        "epochs.finetune=1",
        "head_lr=1e-3",
        "study=three",
        f"tracking_uri={store}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.log[-4000:]
    df = runs(store, "three")
    jobs = df[df["tags.run_kind"] == "job"]
    assert jobs["params.data.class_names"].item() == "['cats', 'disks', 'dogs']"
    regimes = df[df["tags.run_kind"] == "regime"].set_index("tags.regime")
    # augmented pixels differ every epoch: decoded images and the head phase are cached, and features only of
    # the held-out splits (validation, test at block_16_expand and at the top), never of the training images
    cache = tmp_path / "cache"
    assert any((cache / "images").glob("*.npy")) and any((cache / "head").iterdir())
    assert len(list((cache / "features").glob("*.npy"))) == 2 * 2
    assert regimes.loc["frozen", "tags.head_phase"] == "trained"
    assert regimes["metrics.test_acc"].notna().all()  # both regimes measured on the test split
    # bright disks on noise are trivially told apart from photographs: chance is 1/3
    assert regimes.loc["frozen", "metrics.test_acc"] > 0.5
