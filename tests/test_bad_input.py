"""Bad input: one clear message naming the value and what is allowed, a non-zero exit, nothing left behind.

Every case runs the real CLI, as a single run and (where it matters) inside a multirun, and then checks
that no MLflow run exists (so none can be left RUNNING) and that no cache entry was written.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest
from conftest import cli_env, compose, run_cli
from PIL import Image

from harness import data
from harness.data import shown
from harness.errors import HarnessError
from harness.jobs import inputs


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """A small folder of generated JPEGs with the classes named as Chollet's cats and dogs (no ../shared)."""
    generated = data.ensure_synthetic(tmp_path_factory.mktemp("gen"), {"train": 4, "validation": 2, "test": 2})
    folder = tmp_path_factory.mktemp("bad") / "small"
    shutil.copytree(generated, folder)
    for split in ("train", "validation", "test"):
        (folder / split / "disks").rename(folder / split / "cats")
        (folder / split / "squares").rename(folder / split / "dogs")
    return folder


def damaged(small: Path, tmp_path: Path, damage) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(small, copy)
    damage(copy)
    return copy


def assert_nothing_recorded(store: str, tmp_path: Path) -> None:
    db = Path(store.removeprefix("sqlite:///"))
    if db.exists():
        mlflow.set_tracking_uri(store)
        experiments = [e.experiment_id for e in mlflow.search_experiments()]
        assert mlflow.search_runs(experiments).empty
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.rglob("*.npy"))


def expect_error(tmp_path: Path, store: str, args: list[str], needle: str, code: int = 2) -> str:
    proc = run_cli(*args, f"tracking_uri={store}", f"cache_dir={tmp_path / 'cache'}", cwd=tmp_path)
    assert proc.returncode == code, proc.log[-3000:]
    assert needle in proc.log, proc.log[-3000:]
    assert "Traceback" not in proc.log
    assert_nothing_recorded(store, tmp_path)
    return proc.log


MOBILENET = ["backbone=mobilenetv2", "backbone.weights=null", "backbone.image_size=32"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["unfreeze_at=block9_conv1"], "unfreeze_at='block9_conv1' is not a layer of backbone vgg16"),
        ([*MOBILENET, "unfreeze_at=block5_conv1"], "('block5_conv1' is a vgg16 layer). Valid mobilenetv2 boundaries"),
        (["backbone.name=resnet"], "backbone='resnet' is not known; choose one of ['convnext_base', 'convnext_large'"),
        (["lr=0"], "lr=0.0 must be > 0"),
        (["head_lr=-0.1"], "head_lr=-0.1 must be > 0"),
        (["data_fraction=0"], "data_fraction=0.0 must be in (0, 1]"),
        (["data_fraction=2"], "data_fraction=2.0 must be in (0, 1]"),
        (["regimes=[scratch,finetune]"], "add frozen (regimes=[frozen,finetune])"),
        (["backbone.weights=/nowhere/w.h5"], "backbone.weights='/nowhere/w.h5': no such file"),
        (
            ["heartbeat_s=50", "lease_s=120"],
            "heartbeat_s=50.0 must be > 0 and at most a third of lease_s=120.0 (<= 40)",
        ),
        (["heartbeat_s=0"], "heartbeat_s=0.0 must be > 0"),
        (["lease_s=-1"], "lease_s=-1.0 must be > 0"),
        (["data.max_pixels=0"], "data.max_pixels=0 must be >= 1"),
        (["scratch.dropout=1.5"], "scratch.dropout=1.5 must be in [0, 1)"),
    ],
)
def test_bad_config_value(tmp_path, store, args, needle):
    expect_error(tmp_path, store, ["data=synthetic", *args], needle)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["lr=abc"], "Value 'abc' of type 'str' could not be converted to Float\n    full_key: lr"),
        (
            ["regimes=[frozen,distill]"],
            "Invalid value 'distill', expected one of [scratch, frozen, finetune, finetune_direct, l2sp]",
        ),
        (["-m", "optimizer=rmsprop,sgdd"], "Invalid value 'sgdd', expected one of [rmsprop, adam]"),
    ],
)
def test_a_wrong_type_or_choice_is_refused_by_hydra_before_any_job(tmp_path, store, args, needle):
    """Hydra's own message and exit status 1 (its convention for a config it cannot compose), no traceback."""
    expect_error(tmp_path, store, [*args, "data=synthetic"], needle, code=1)


def test_data_folder_without_a_path_says_how_to_name_one(tmp_path, store):
    expect_error(tmp_path, store, ["data=folder"], "data=folder needs data.path: data.path=/path/to/images")


def test_bad_value_inside_a_multirun_stops_it_before_any_job(tmp_path, store):
    log = expect_error(
        tmp_path,
        store,
        ["-m", "data=synthetic", *MOBILENET, "unfreeze_at=block_16_expand,nope", "regimes=[frozen]"],
        "sweep: 1 of 2 job(s) cannot run; nothing was started",
    )
    assert "unfreeze_at='nope'" in log


def test_unknown_backbone_group(tmp_path, store):
    expect_error(tmp_path, store, ["backbone=resnet"], "Could not find 'backbone/resnet'", code=1)


def test_missing_data_path(tmp_path, store):
    expect_error(tmp_path, store, ["data=folder", f"data.path={tmp_path / 'none'}"], "is not a folder")


@pytest.mark.parametrize("split", ["train", "validation"])
def test_missing_split(tmp_path, store, small, split):
    path = damaged(small, tmp_path, lambda d: shutil.rmtree(d / split))
    expect_error(tmp_path, store, ["data=folder", f"data.path={path}"], f"has no {split}/ folder")


def test_class_folder_without_images(tmp_path, store, small):
    def empty_dogs(d: Path) -> None:
        for f in (d / "validation" / "dogs").iterdir():
            f.unlink()

    path = damaged(small, tmp_path, empty_dogs)
    expect_error(tmp_path, store, ["data=folder", f"data.path={path}"], "validation/dogs has no readable images")


def test_class_names_differ_between_splits(tmp_path, store, small):
    path = damaged(small, tmp_path, lambda d: (d / "validation" / "dogs").rename(d / "validation" / "wolves"))
    expect_error(
        tmp_path,
        store,
        ["data=folder", f"data.path={path}"],
        "class folders differ between splits: train has ['cats', 'dogs'], validation has ['cats', 'wolves']",
    )


def huge_png(path: Path, width: int = 20_000, height: int = 20_000) -> None:
    """A valid 1-bit PNG of width x height pixels in a few KB: 400 megapixels, gigabytes once decoded."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer = zlib.compressobj(9)
    row = b"\x00" * (1 + width // 8)  # filter byte, then 8 pixels per byte
    pixels = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))


def bad_file_cases(good_jpeg: bytes, good_png: bytes) -> dict[str, tuple[Callable[[Path], Path], str]]:
    """Every kind of bad file: how to make it in a class folder (returns its path), and what the message says."""

    def write(name: str, content: bytes) -> Callable[[Path], Path]:
        def make(folder: Path) -> Path:
            (folder / name).write_bytes(content)
            return folder / name

        return make

    def dangling(folder: Path) -> Path:
        (folder / "gone.jpg").symlink_to(folder / "deleted-meanwhile.jpg")
        return folder / "gone.jpg"

    def bomb(folder: Path) -> Path:
        huge_png(folder / "bomb.png")
        return folder / "bomb.png"

    not_utf8 = os.fsdecode(b"caf\xe9.jpg")  # a Latin-1 name on a UTF-8 system
    return {
        "empty": (write("empty.jpg", b""), "empty file"),
        "text": (write("notes.jpg", b"this is not a picture\n"), "not a JPEG, PNG, GIF or BMP image"),
        "truncated JPEG": (write("cut.jpg", good_jpeg[: len(good_jpeg) // 2]), "truncated JPEG"),
        "truncated PNG": (write("cut.png", good_png[:-20]), "truncated PNG"),
        "dangling link": (dangling, "broken symbolic link"),
        "name not UTF-8": (write(not_utf8, good_jpeg), "file name is not valid UTF-8"),
        "decompression bomb": (bomb, "400,000,000 pixels, over data.max_pixels=100,000,000"),
    }


def png_of(jpeg: bytes) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(jpeg)).save(out, format="PNG")
    return out.getvalue()


def test_every_bad_file_is_named_then_stops_the_job_or_is_skipped_and_counted(tmp_path, store, small):
    """The bad-input corpus: each bad file alone stops a job under data.on_bad_file=stop with a line naming it
    (checked as each job checks its inputs, in-process); all together, through the CLI, stop it with exit
    status 2 and nothing recorded, or under skip (the default) are named and counted while the job goes on.
    Files of other types (.webp, .tif) are not bad, but counted and named as left out."""
    good = next(iter(sorted((small / "train" / "cats").iterdir()))).read_bytes()
    cases = bad_file_cases(good, png_of(good))
    for case, (make, why) in cases.items():
        path = damaged(small, tmp_path / case, lambda d: None)
        bad = make(path / "train" / "cats")
        cfg = compose("data=folder", f"data.path={path}", "data.on_bad_file=stop", *MOBILENET)
        with pytest.raises(HarnessError) as error:
            inputs.prepare(cfg)
        assert f"{shown(bad)}: {why}" in str(error.value), f"{case}: {error.value}"

    def all_of_them(d: Path) -> None:
        for make, _ in cases.values():
            make(d / "train" / "cats")
        (d / "train" / "dogs" / "scan.webp").write_bytes(b"RIFF....WEBP")
        (d / "validation" / "dogs" / "scan.tif").write_bytes(b"II*\x00")

    path = damaged(small, tmp_path / "all", all_of_them)
    log = expect_error(tmp_path, store, ["data=folder", f"data.path={path}", "data.on_bad_file=stop"], "7 unreadable")
    for _, why in cases.values():
        assert why in log
    proc = run_cli("data=folder", f"data.path={path}", *MOBILENET, "regimes=[frozen]", "epochs.head=1",
                   f"tracking_uri={store}", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0 and "Traceback" not in proc.log, proc.log[-3000:]
    assert "skipped 7 unreadable file(s)" in proc.log
    assert "left out 2 file(s) that are not jpg/jpeg/png/bmp/gif images (1 .tif, 1 .webp)" in proc.log
    for _, why in cases.values():
        assert why in proc.log
    mlflow.set_tracking_uri(store)
    jobs = mlflow.search_runs(experiment_names=["default"]).query("`tags.run_kind` == 'job'")
    assert jobs["params.data.bad_files_skipped"].tolist() == ["7"]
    assert jobs["params.data.files_ignored"].tolist() == ["2"]
    assert jobs["params.data.n_train"].tolist() == ["8"]


def test_fraction_too_small_for_a_class(tmp_path, store, small):
    expect_error(
        tmp_path,
        store,
        ["data=folder", f"data.path={small}", "data_fraction=0.1"],
        "data_fraction=0.1 leaves class 'cats' with no training image (it has 4); use data_fraction >= 0.25",
    )


def test_weights_that_do_not_fit_the_backbone(tmp_path, store, mobilenet_weights):
    expect_error(
        tmp_path,
        store,
        ["data=synthetic", "backbone.image_size=32", f"backbone.weights={mobilenet_weights}"],
        "does not fit backbone vgg16",
    )
    assert not Path(store.removeprefix("sqlite:///")).exists()  # refused before the store was even created


def test_store_that_cannot_be_written(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    store = f"sqlite:///{blocker / 'mlflow.db'}"
    expect_error(tmp_path, store, ["data=synthetic", *MOBILENET], "cannot create")


def test_server_that_does_not_answer(tmp_path):
    proc = run_cli("data=synthetic", *MOBILENET, "tracking_uri=http://127.0.0.1:9", cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.log[-3000:]
    assert "tracking_uri='http://127.0.0.1:9': no MLflow server answers there" in proc.log


def test_cache_dir_that_cannot_be_written(tmp_path, store):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    cache_dir = blocker / "cache"  # below a file: no one can create it
    proc = run_cli("data=synthetic", *MOBILENET, f"cache_dir={cache_dir}", f"tracking_uri={store}", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.log, proc.log[-3000:]
    assert f"cache_dir='{cache_dir}' cannot be written" in proc.log and "cache=false" in proc.log
    assert_nothing_recorded(store, tmp_path)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_a_cache_folder_that_cannot_take_entries_is_refused_before_any_job(tmp_path, store):
    """A group cache whose features/ folder another user made read-only: the job must not build its features and
    then fail on the write. Run as root without capabilities, so that permissions apply as to any user."""
    cache_dir = tmp_path / "cache"
    (cache_dir / "features").mkdir(parents=True)
    (cache_dir / "features").chmod(0o555)
    (tmp_path / "mlruns").mkdir()
    capless = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run(
        [*capless, sys.executable, "-m", "harness", "data=synthetic", *MOBILENET, f"cache_dir={cache_dir}",
         f"tracking_uri={store}", f"data.path={tmp_path / 'gen'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    log = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in log, log[-3000:]
    assert f"cache_dir='{cache_dir}' cannot be written ({cache_dir / 'features'}: Permission denied)" in log
    assert "umask 002" in log
    assert_nothing_recorded(store, tmp_path)


@pytest.mark.parametrize("sweep", [[], ["-m", "seed=0,1"]])
def test_a_bad_value_is_refused_before_tensorflow_is_imported(tmp_path, store, sweep):
    """TensorFlow's import is most of the start-up (7.7 s of 10.7 s measured): a typo costs none of it."""
    args = [*sweep, "data=synthetic", "lr=0", f"tracking_uri={store}", f"cache_dir={tmp_path / 'cache'}"]
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "harness", *args],
        cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2 and "lr=0.0 must be > 0" in proc.stderr + proc.stdout, proc.stderr[-3000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")]
    assert "harness.config.checks" in imported  # the check ran in this process, its imports traced
    assert not [m for m in imported if m.split(".")[0] in ("tensorflow", "keras")]


# MobileNetV2 at 224 px cut at block_1_expand on the 200 generated images: 191.7 MB to write, for a 2 MB disk
LARGE_CUT = (
    "data=synthetic", "backbone=mobilenetv2", "backbone.weights=null", "backbone.image_size=224",
    "regimes=[frozen,finetune]", "unfreeze_at=block_1_expand",
)  # fmt: skip


def test_a_cache_on_a_disk_too_small_for_the_job_is_refused_with_the_numbers(tmp_path, store, small_disk):
    """MobileNetV2 at 224 px cut at block_1_expand on the 200 generated images: 803 KB of float32 per image."""
    proc = run_cli(*LARGE_CUT, f"tracking_uri={store}", f"cache_dir={small_disk / 'cache'}", cwd=tmp_path)
    assert proc.returncode == 2, proc.log[-3000:]
    said = r"has 2\.\d MB free on its filesystem, and this job would write 191\.7 MB \(images 30\.1 MB, features@pooled"
    assert re.search(said + r" 1\.0 MB, features@block_1_expand 160\.6 MB\)", proc.log), proc.log[-3000:]
    assert "Traceback" not in proc.log
    assert_nothing_recorded(store, tmp_path)
    assert not any(small_disk.rglob("*.npy"))


def test_without_a_cache_the_temporary_folder_must_hold_the_arrays_and_is_checked_the_same_way(
    tmp_path, store, small_disk
):
    """cache=false: the job's arrays go to unlinked files in $TMPDIR, so the plan checks that folder's filesystem."""
    proc = run_cli(*LARGE_CUT, f"tracking_uri={store}", "cache=false", cwd=tmp_path, env={"TMPDIR": str(small_disk)})
    assert proc.returncode == 2, proc.log[-3000:]
    said = rf"the temporary folder '{small_disk}' \(\$TMPDIR\) has 2\.\d MB free on its filesystem, and this job would"
    assert re.search(said + r" write 191\.7 MB \(images 30\.1 MB", proc.log), proc.log[-3000:]
    assert "Traceback" not in proc.log
    assert_nothing_recorded(store, tmp_path)
    assert list(small_disk.iterdir()) == []


@pytest.mark.parametrize(
    ("header", "row", "needle"),
    [
        ("path,label", "train/cats/{name},cats", "has no column 'split'; a manifest has the columns path, label"),
        (
            "path,label,split",
            "train/cats/{name},cats,training",
            "split 'training' is not one of train, validation, test",
        ),
        ("path,label,split", "train/cats/gone.jpg,cats,train", "lists 1 file(s) that do not exist"),
    ],
)
def test_a_manifests_mistake_is_refused_before_any_job(tmp_path, store, small, header, row, needle):
    """data=manifest: a missing column, an unknown split or a missing file, named; exit 2 and nothing recorded."""
    name = sorted((small / "train" / "cats").iterdir())[0].name
    listed = [f"{f.relative_to(small)},{f.parent.name},{f.parent.parent.name}" for f in sorted(small.rglob("*.jpg"))]
    if header == "path,label":
        listed = [line.rsplit(",", 1)[0] for line in listed]
    manifest = small / f"manifest-{abs(hash(needle))}.csv"  # paths relative to its folder
    manifest.write_text("\n".join([header, row.format(name=name), *listed]) + "\n")
    expect_error(tmp_path, store, ["data=manifest", f"data.path={manifest}"], needle)
