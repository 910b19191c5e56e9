"""The activation cache and the shared head phase: same numbers with or without them, atomic writes, dry run."""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import signal
import stat
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import copy_small, run_cli, tiny_frozen

from harness.jobs.cache import ArrayCache, make_key
from harness.jobs.npy_writer import NpyWriter


@pytest.fixture(scope="module")
def small_data(tmp_path_factory, cats_dogs) -> Path:
    return copy_small(cats_dogs, tmp_path_factory.mktemp("data") / "small")


def regime_runs(store: str, study: str):
    mlflow.set_tracking_uri(store)
    df = mlflow.search_runs(experiment_names=[study])
    return df[df["tags.run_kind"] == "regime"].set_index("tags.regime")


def histories(store: str, run_id: str) -> dict[str, list[float]]:
    client = mlflow.MlflowClient(store)
    return {m: [x.value for x in client.get_metric_history(run_id, m)] for m in ("loss", "acc", "val_loss", "val_acc")}


@pytest.mark.slow
def test_cache_changes_cost_not_results(tmp_path, store, small_data, mobilenet_weights):
    args = tiny_frozen(
        mobilenet_weights,
        store,
        small_data,
        "regimes=[frozen,finetune]",
        "unfreeze_at=block_15_expand",
        "epochs.finetune=2",
        "lr=1e-4",
    )
    for study, cache in (("off", "false"), ("cold", "true"), ("warm", "true")):
        proc = run_cli(*args, f"study={study}", f"cache={cache}", cwd=tmp_path)
        assert proc.returncode == 0, proc.log[-3000:]
    off, cold, warm = (regime_runs(store, s) for s in ("off", "cold", "warm"))
    assert off.loc["frozen", "tags.cache"] == "off"
    assert cold.loc["frozen", "tags.cache"] == "miss" and cold.loc["frozen", "tags.head_phase"] == "trained"
    assert warm.loc["frozen", "tags.cache"] == "hit" and warm.loc["frozen", "tags.head_phase"] == "reused"
    # cold: the fine-tuning cut was built on the way to the top features (one pass over the images)
    assert warm.loc["finetune", "tags.cache"] == "hit" and cold.loc["finetune", "tags.cache"] == "hit"
    assert float(cold.loc["frozen", "metrics.cache_build_s"]) > 0
    for regime in ("frozen", "finetune"):
        ref = histories(store, off.loc[regime, "run_id"])
        for other in (cold, warm):
            got = histories(store, other.loc[regime, "run_id"])
            for metric in ref:
                np.testing.assert_allclose(got[metric], ref[metric], rtol=1e-5, atol=1e-6, err_msg=f"{regime} {metric}")
            assert other.loc[regime, "metrics.test_acc"] == pytest.approx(off.loc[regime, "metrics.test_acc"], abs=1e-6)
            for estimate in ("metrics.logme", "metrics.knn_loo_acc"):  # warm: kept with the stored head phase
                assert other.loc[regime, estimate] == pytest.approx(off.loc[regime, estimate], abs=1e-6)


@pytest.mark.slow
def test_boundary_sweep_trains_the_head_phase_once(tmp_path, store, small_data, mobilenet_weights):
    proc = run_cli(
        "-m",
        "unfreeze_at=block_14_expand,block_15_expand,block_16_expand",
        *tiny_frozen(mobilenet_weights, store, small_data, "regimes=[frozen,finetune]", "epochs.finetune=1"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.log[-3000:]
    assert proc.log.count("head phase reused from the cache") == 2
    df = regime_runs(store, "default")
    frozen = df.loc[["frozen"]]
    assert sorted(frozen["tags.head_phase"]) == ["reused", "reused", "trained"]
    assert frozen["tags.head_phase_key"].nunique() == 1
    assert frozen["metrics.test_acc"].nunique() == 1  # one head phase, one result
    # the first job builds its cut on the way to the top features; later cuts are derived from cached ones
    assert proc.log.count("features@block_15_expand: train/validation/test from cached features@block_14_expand") == 1
    assert proc.log.count("features@block_16_expand: train/validation/test from cached features@block_15_expand") == 1

    # the plan of the same sweep now reuses everything (force=true: plan it instead of skipping it)
    plan = run_cli(
        "-m",
        "dry_run=true",
        "force=true",
        "unfreeze_at=block_14_expand,block_15_expand,block_16_expand",
        *tiny_frozen(mobilenet_weights, store, small_data, "regimes=[frozen,finetune]", "epochs.finetune=1"),
        cwd=tmp_path,
    )
    assert plan.returncode == 0, plan.log[-3000:]
    assert plan.stdout.count("head phase reuse") == 3 and "build" not in plan.stdout
    # with the features cached, the plan shows the estimates each run logged before it trained
    tuned = df.loc[["finetune"]].set_index("tags.unfreeze_at")
    for cut in ("block_14_expand", "block_16_expand"):
        logme = float(tuned.loc[cut, "metrics.logme"])
        knn = 100 * float(tuned.loc[cut, "metrics.knn_loo_acc"])
        assert f"estimates@{cut} LogME {logme:.3f}, k-NN LOO acc {knn:.1f}%" in plan.stdout, plan.stdout


@pytest.mark.slow
def test_pooled_features_are_derived_from_cached_top_features(tmp_path, store, small_data, mobilenet_weights):
    # a flatten head trains on the backbone's output; a GAP head on it pooled, which the cache derives from it
    for head in ("flatten", "gap"):
        proc = run_cli(
            *tiny_frozen(mobilenet_weights, store, small_data, f"head={head}", f"study={head}"), cwd=tmp_path
        )
        assert proc.returncode == 0, proc.log[-3000:]
    assert "features@pooled: train/validation/test from cached features@top" in proc.log
    flatten, gap = (regime_runs(store, s).loc["frozen"] for s in ("flatten", "gap"))
    assert flatten["tags.cache"] == "miss" and gap["tags.cache"] == "miss"  # built, though not from pixels
    assert gap[["metrics.test_acc", "metrics.cache_build_s"]].notna().all() and float(gap["metrics.cache_build_s"]) > 0


def test_dry_run_lists_jobs_reuse_and_cost_without_training(tmp_path, store, small_data, mobilenet_weights):
    proc = run_cli(
        "-m",
        "dry_run=true",
        "unfreeze_at=block_15_expand,block_16_expand",
        *tiny_frozen(mobilenet_weights, store, small_data, "regimes=[frozen,finetune]"),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.log[-3000:]
    out = proc.stdout
    assert "job 0:" in out and "job 1:" in out and "total: est." in out
    first, second = out.split("job 1:")
    assert "images train:build" in first and "head phase build" in first
    assert re.search(r"features@pooled \([\d.]+ MB\) train:build", first), first
    assert "images train:reuse" in second and "head phase reuse" in second
    assert re.search(r"features@block_16_expand \([\d.]+ MB\) train:build", second), second
    assert "min here" in second
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.npy"))
    mlflow.set_tracking_uri(store)
    assert mlflow.search_runs(search_all_experiments=True).empty


SHAPE = (2000, 1000)  # 8 MB: a write takes long enough for the reader to look while it happens
KEY = {"same": "key"}


def _write_at_once(root: str, barrier, bundle_barrier, value: float) -> None:
    """One writer of the shared key: every writer passes the barrier, then builds and stores at once."""
    cache = ArrayCache(root)
    key = make_key("features", KEY)

    def build(missing, allocate):
        barrier.wait(timeout=60)
        out = {name: allocate(name, SHAPE, np.float32) for name in missing}  # memory-mapped, written in place
        for array in out.values():
            array[:] = value
        return out

    got = cache.arrays({"x": key}, build)
    assert got["x"].shape == SHAPE

    def write(folder: Path) -> None:
        bundle_barrier.wait(timeout=60)  # the bundle writers overlap too
        np.save(folder / "weights.npy", np.full(SHAPE, value, np.float32))

    cache.store_bundle(make_key("head", KEY), write)


def _read_while_written(root: str, barrier, stop, report) -> None:
    """Look at the final paths as fast as possible while the writers write: every entry seen must be whole."""
    cache = ArrayCache(root)
    array_path, bundle_key = cache.path(make_key("features", KEY)), make_key("head", KEY)
    barrier.wait(timeout=60)
    seen = 0
    while not stop.is_set():
        if array_path.is_file():
            loaded = np.load(array_path)
            assert loaded.shape == SHAPE and np.all(loaded == 1.0)
            seen += 1
        weights = cache.load_bundle(bundle_key, lambda folder: np.load(folder / "weights.npy"))
        if weights is not None:
            assert np.all(weights == 1.0)
            seen += 1
    report.put(seen)


def test_concurrent_writers_of_one_entry_never_fail_or_tear_it_and_a_reader_sees_only_whole_entries(tmp_path):
    """As on a shared cache_dir: writers of one key overlap for real (a barrier), a reader reads meanwhile."""
    ctx = mp.get_context("spawn")
    writers = 3
    barrier, bundle_barrier = ctx.Barrier(writers + 1), ctx.Barrier(writers)
    stop, report = ctx.Event(), ctx.Queue()
    reader = ctx.Process(target=_read_while_written, args=(str(tmp_path), barrier, stop, report))
    args = (str(tmp_path), barrier, bundle_barrier, 1.0)
    procs = [ctx.Process(target=_write_at_once, args=args) for _ in range(writers)]
    reader.start()
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    stop.set()
    reader.join(60)
    assert reader.exitcode == 0, "the reader saw a partial entry"
    assert report.get(timeout=10) > 0, "the reader never saw the entries"
    visible = sorted(str(f.relative_to(tmp_path)) for f in tmp_path.rglob("*") if not f.name.startswith("."))
    assert len([v for v in visible if v.endswith(".npy")]) == 2, visible  # one array entry, one bundle file
    assert not [f for f in tmp_path.rglob(".*")], "a temporary file or folder was left behind"
    again = ArrayCache(tmp_path)
    again.arrays({"x": make_key("features", KEY)}, lambda missing, allocate: pytest.fail("rebuilt a cached entry"))
    assert len(again.stats.hits) == 1


def test_disabled_cache_builds_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a cache that wrote anyway would write somewhere under here or the default root
    cache = ArrayCache(None)
    out = cache.arrays({"a": "features-1"}, lambda missing, allocate: {m: np.ones(3) for m in missing})
    assert out["a"].tolist() == [1, 1, 1] and not cache.enabled and cache.stats.misses == ["features-1"]
    cache.store_bundle("head-1", lambda folder: pytest.fail("a disabled cache wrote a bundle"))
    assert cache.load_bundle("head-1", lambda folder: pytest.fail("a disabled cache read a bundle")) is None
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("mask", "file_mode", "folder_mode"), [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)])
def test_entries_follow_the_umask_so_a_group_can_share_the_cache(tmp_path, mask, file_mode, folder_mode):
    old = os.umask(mask)
    try:
        cache = ArrayCache(tmp_path / "cache")
        cache.arrays({"a": make_key("features", {"m": mask})}, lambda missing, _: {m: np.ones(3) for m in missing})
        cache.store_bundle(make_key("head", {"m": mask}), lambda folder: np.save(folder / "w.npy", np.ones(2)))
    finally:
        os.umask(old)
    entry = cache.path(make_key("features", {"m": mask}))
    bundle = cache.path(make_key("head", {"m": mask}), "")
    assert stat.S_IMODE(entry.stat().st_mode) == file_mode  # not the 0600 of a temporary file
    assert stat.S_IMODE(bundle.stat().st_mode) == folder_mode  # not the 0700 of a temporary folder
    assert stat.S_IMODE((bundle / "w.npy").stat().st_mode) == file_mode
    assert stat.S_IMODE(entry.parent.stat().st_mode) == folder_mode


def test_a_corrupt_entry_is_discarded_and_rebuilt_never_served(tmp_path, caplog):
    cache = ArrayCache(tmp_path)
    key, bundle = make_key("features", {"c": 1}), make_key("head", {"c": 1})
    cache.arrays({"a": key}, lambda missing, allocate: {m: np.arange(1000.0) for m in missing})
    cache.store_bundle(bundle, lambda folder: np.save(folder / "w.npy", np.ones(2)))
    path = cache.path(key)
    path.write_bytes(path.read_bytes()[:200])  # truncated: a full disk, a copy cut short
    (cache.path(bundle, "") / "w.npy").unlink()  # a bundle missing a file
    built = []
    again = ArrayCache(tmp_path)
    out = again.arrays({"a": key}, lambda missing, _: built.append(missing) or {m: np.arange(1000.0) for m in missing})
    assert built == [["a"]] and out["a"].tolist() == list(np.arange(1000.0))
    assert np.load(path).tolist() == list(np.arange(1000.0))  # rebuilt and stored whole again
    assert again.load_bundle(bundle, lambda folder: np.load(folder / "w.npy")) is None
    assert not cache.path(bundle, "").exists()  # discarded, so the next job trains and stores it again
    assert caplog.text.count("cannot be read") == 2 and "discarded, it is built again" in caplog.text


def test_a_built_array_is_written_to_its_file_and_read_back_memory_mapped(tmp_path):
    """Nothing sized by the dataset stays in the process: the builder writes into the entry's file (under a temporary
    name, at its full size from the start), the caller gets the stored entry mapped read-only, and a later job maps
    the same file."""
    cache = ArrayCache(tmp_path)
    key = make_key("features", {"mapped": 1})

    def build(missing, allocate):
        out = allocate("a", (5, 3), np.float32)
        assert isinstance(out, NpyWriter) and len(out) == 5
        (tmp,) = cache.path(key).parent.glob(".*.tmp")
        assert tmp.stat().st_size == out.offset + 15 * 4 and not cache.has(key)
        out[:] = np.arange(15.0).reshape(5, 3)
        return {"a": out}

    got = cache.arrays({"a": key}, build)["a"]
    assert isinstance(got, np.memmap) and not got.flags.writeable and Path(got.filename) == cache.path(key)
    np.testing.assert_array_equal(got, np.arange(15.0).reshape(5, 3))
    again = ArrayCache(tmp_path).arrays({"a": key}, lambda missing, allocate: pytest.fail("rebuilt"))["a"]
    assert isinstance(again, np.memmap) and np.array_equal(again, got)
    assert not [f for f in tmp_path.rglob(".*")]


def test_arrays_not_stored_go_to_unlinked_spill_files_that_leave_nothing(tmp_path):
    """cache=false (and preprocessed pixels): the arrays live in files of the spill folder ($TMPDIR) that are
    unlinked as soon as they are created, so nothing is left there, even when the job is killed."""
    spill = tmp_path / "spill"
    cache = ArrayCache(None, spill=spill)

    def build(missing, allocate):
        out = {m: allocate(m, (4, 2), np.uint8) for m in missing}
        for i, array in enumerate(out.values()):
            array[:] = i + 1
        assert list(spill.iterdir()) == []  # already unlinked while the builder writes
        return out

    out = cache.arrays({"a": "images-1", "b": "images-2"}, build)
    assert isinstance(out["a"], np.memmap) and out["a"].tolist() == [[1, 1]] * 4 and out["b"].sum() == 16
    assert cache.temporary(["c"], build)["c"].sum() == 8
    assert list(spill.iterdir()) == [] and not cache.enabled


def test_a_failed_build_leaves_no_entry_and_no_temporary_file(tmp_path):
    cache = ArrayCache(tmp_path)
    key = make_key("features", {"fails": 1})

    def build(missing, allocate):
        allocate("a", (1000, 10), np.float32)[:500] = 1.0
        raise RuntimeError("out of luck halfway")

    with pytest.raises(RuntimeError):
        cache.arrays({"a": key}, build)
    assert not cache.has(key) and not [f for f in tmp_path.rglob("*") if f.is_file()]


def _killed_while_writing(root: str, written) -> None:
    """Write half of an entry's file, say so, and wait to be killed."""
    cache = ArrayCache(root)

    def build(missing, allocate):
        array = allocate("a", (1000, 100), np.float32)
        array[:500] = 1.0
        array.flush()
        written.set()
        time.sleep(600)
        return {"a": array}

    cache.arrays({"a": make_key("features", {"killed": 1})}, build)


def test_a_job_killed_while_writing_a_cut_leaves_nothing_a_later_job_uses(tmp_path):
    """SIGKILL halfway through a cut: the half-written file is under a temporary name, so a later job builds the entry
    itself (and, on the same machine, removes the dead process's leftover)."""
    ctx = mp.get_context("spawn")
    written = ctx.Event()
    proc = ctx.Process(target=_killed_while_writing, args=(str(tmp_path), written))
    proc.start()
    assert written.wait(120), "the writer never started writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(30)
    key = make_key("features", {"killed": 1})
    leftovers = [f for f in tmp_path.rglob(".*") if f.is_file()]
    assert len(leftovers) == 1 and str(proc.pid) in leftovers[0].name
    cache = ArrayCache(tmp_path)
    assert not cache.has(key) and cache.load(key) is None
    built = []

    def build(missing, allocate):
        built.append(missing)
        array = allocate("a", (1000, 100), np.float32)
        array[:] = 2.0
        return {"a": array}

    out = cache.arrays({"a": key}, build)
    assert built == [["a"]] and float(out["a"].min()) == 2.0
    assert not [f for f in tmp_path.rglob(".*") if f.is_file()], "the dead writer's temporary file is still there"
