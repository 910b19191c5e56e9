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

ARCHIVE = "cats_and_dogs_filtered.zip"  # the name conf/data/cats_and_dogs_filtered.yaml's URL ends with


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
    home = tmp_path / "empty_keras_home" / "models"
    assert "Keras fetches vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5 from https://" in proc.log
    assert f"into {home}: put it there" in proc.log  # the file, and where Keras looks for it
    assert "data.path=/path/to/images" in proc.log and "backbone.weights=null" in proc.log  # what to do instead
    assert "nothing was started" in proc.log
    assert not Path(store.removeprefix("sqlite:///")).exists()  # nothing recorded
    shutil.rmtree(tmp_path / "empty_keras_home", ignore_errors=True)


def harness_offline(tmp_path: Path, store: str, *args: str):
    return run_cli("backbone=mobilenetv2", "backbone.weights=null", "backbone.image_size=32", "regimes=[frozen]",
                   "epochs.head=1", f"tracking_uri={store}", *args, cwd=tmp_path)  # fmt: skip


@pytest.mark.loopback_only
def test_a_download_cut_short_is_never_used(tmp_path, store, monkeypatch):
    """A kill -9 during the download left a truncated archive where Keras keeps it (older code wrote there
    directly): offline, the run must not train on what it holds but say it could not download, and drop it."""
    home = keras_home_with_archive(tmp_path)
    archive = home / "datasets" / ARCHIVE
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    monkeypatch.setenv("KERAS_HOME", str(home))
    proc = harness_offline(tmp_path, store)
    assert proc.returncode == 2 and "Traceback" not in proc.log, proc.log[-3000:]
    assert "discarding the incomplete archive" in proc.log and "could not download" in proc.log
    assert not archive.exists() and not (home / "datasets" / "cats_and_dogs_filtered").exists()
    assert not list((home / "datasets").glob(".*part")), "a partial download was left behind"
    assert not Path(store.removeprefix("sqlite:///")).exists()


@pytest.mark.slow  # trains a job
@pytest.mark.loopback_only
def test_an_extraction_cut_short_is_extracted_again(tmp_path, store, monkeypatch):
    home = keras_home_with_archive(tmp_path)
    partial = home / "datasets" / "cats_and_dogs_filtered" / "cats_and_dogs_filtered" / "train" / "cats"
    partial.mkdir(parents=True)  # what a kill during the old extraction left: one class folder, half full
    with zipfile.ZipFile(home / "datasets" / ARCHIVE) as zf:
        first = sorted(n for n in zf.namelist() if "/train/cats/" in n)[0]
        (partial / Path(first).name).write_bytes(zf.read(first))
    monkeypatch.setenv("KERAS_HOME", str(home))
    proc = harness_offline(tmp_path, store)
    assert proc.returncode == 0, proc.log[-3000:]
    assert "discarding the incomplete extraction" in proc.log
    assert "{'train': 12, 'validation': 6}" in proc.log  # every photograph, not the one the partial folder had
    assert (home / "datasets" / "cats_and_dogs_filtered" / ".complete").is_file()


@pytest.mark.loopback_only
def test_truncated_imagenet_weights_in_keras_cache_are_not_loaded(tmp_path, store, monkeypatch):
    """Keras checks its weights files by hash: a truncated one (a kill during its download) is fetched again,
    which offline is a clear download error, never a model built from half a file."""
    home = tmp_path / "keras_home"
    (home / "models").mkdir(parents=True)
    (home / "models" / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5").write_bytes(
        b"\x89HDF\r\n\x1a\n" + b"0" * 4096
    )
    monkeypatch.setenv("KERAS_HOME", str(home))
    generated = data.ensure_synthetic(tmp_path / "gen", {"train": 6, "validation": 3, "test": 3})
    proc = run_cli("data=folder", f"data.path={generated}", "backbone.image_size=32", f"tracking_uri={store}",
                   cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.log, proc.log[-3000:]
    assert "could not download vgg16's ImageNet weights" in proc.log
    assert not Path(store.removeprefix("sqlite:///")).exists()


@pytest.mark.slow  # trains a job
@pytest.mark.loopback_only
def test_a_data_path_given_with_the_default_data_is_used_and_nothing_is_downloaded(tmp_path, store, monkeypatch):
    """`python -m harness data.path=/my/photos` keeps the default data group (the tutorial's archive): the path
    given is what trains, offline, and no download is tried."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_keras_home"))
    photos = data.ensure_synthetic(tmp_path / "gen", {"train": 6, "validation": 3, "test": 3})
    proc = harness_offline(tmp_path, store, f"data.path={photos}")
    assert proc.returncode == 0 and "could not download" not in proc.log, proc.log[-3000:]
    assert "{'train': 12, 'validation': 6, 'test': 6}" in proc.log
    assert not (tmp_path / "empty_keras_home" / "datasets").exists()
    mlflow.set_tracking_uri(store)
    job = mlflow.search_runs(experiment_names=["default"], filter_string="tags.run_kind = 'job'").iloc[0]
    assert job["params.data.data_root"] == str(photos.resolve())
