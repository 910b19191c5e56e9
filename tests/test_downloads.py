"""The headline command's downloads: the TensorFlow tutorial's archive through Keras' cache, and what
happens offline. Both run in a network namespace with loopback only, so no attempt leaves the machine."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import mlflow
import pytest
from conftest import run_cli

from harness import data

ARCHIVE = "cats_and_dogs_filtered.zip"  # the name harness/conf/data/cats_and_dogs_filtered.yaml's URL ends with


def keras_home_with_archive(tmp_path: Path) -> Path:
    """A Keras cache holding the tutorial's archive as Keras would have downloaded it, built from generated
    photographs laid out as the real one (cats_and_dogs_filtered/{train,validation}/{cats,dogs})."""
    generated = data.ensure_synthetic(tmp_path / "gen", {"train": 6, "validation": 3})
    home = tmp_path / "keras_home"
    (home / "datasets").mkdir(parents=True)
    with zipfile.ZipFile(home / "datasets" / ARCHIVE, "w") as archive:
        for path in sorted(generated.rglob("*.jpg")):
            split, cls = path.parent.parent.name, path.parent.name
            renamed = {"disks": "cats", "squares": "dogs"}[cls]
            archive.write(path, f"cats_and_dogs_filtered/{split}/{renamed}/{path.name}")
    return home


@pytest.mark.slow  # over 20 s: the slow tier runs it
@pytest.mark.loopback_only
def test_the_default_data_is_the_tutorials_archive_from_keras_cache(tmp_path, store, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(keras_home_with_archive(tmp_path)))
    proc = run_cli("backbone=mobilenetv2", "backbone.weights=null", "backbone.image_size=32", "regimes=[frozen]",
                   "epochs.head=1", f"tracking_uri={store}", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.log[-3000:]
    assert "{'train': 12, 'validation': 6}" in proc.log  # the archive's photographs, test split absent
    mlflow.set_tracking_uri(store)
    job = mlflow.search_runs(experiment_names=["default"], filter_string="tags.run_kind = 'job'").iloc[0]
    assert job.status == "FINISHED"
    assert (tmp_path / "keras_home" / "datasets" / "cats_and_dogs_filtered").is_dir()  # extracted beside it


@pytest.mark.loopback_only
def test_offline_the_headline_command_stops_at_once_naming_what_it_could_not_fetch(tmp_path, store, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_keras_home"))
    proc = run_cli("-m", "unfreeze_at=block4_conv1,block5_conv1", f"tracking_uri={store}", cwd=tmp_path)
    assert proc.returncode == 2, proc.log[-3000:]
    assert "Traceback" not in proc.log
    assert "could not download what this job needs" in proc.log
    assert "storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip" in proc.log  # the data
    assert "could not download vgg16's ImageNet weights" in proc.log  # and the weights, in the same message
    assert "data.path=/path/to/images" in proc.log and "backbone.weights=null" in proc.log  # what to do instead
    assert "nothing was started" in proc.log
    assert not Path(store.removeprefix("sqlite:///")).exists()  # nothing recorded
    shutil.rmtree(tmp_path / "empty_keras_home", ignore_errors=True)
