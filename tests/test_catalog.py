"""Every keras.applications architecture as a backbone: the shipped registry data, what they say about each
architecture, and that each listed boundary really cuts the model in two."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
import yaml

from harness.paths import conf_dir
from harness.training import backbones, catalog
from harness.training.architectures import BACKBONES

NAMES = sorted(BACKBONES)
# Keras' automatic names (`conv2d_12`) depend on what the process built before: none may name a cut
AUTOMATIC = re.compile(r"(conv2d|batch_normalization|activation|zero_padding2d|layer_normalization|rescaling|"
                       r"normalization|add|multiply|concatenate|re_lu|dense|lambda|reshape)(_\d+)?")  # fmt: skip
SMALL = ["mobilenetv3small", "efficientnetb0", "resnet50v2", "densenet121", "convnext_tiny", "nasnetmobile"]


def test_every_keras_application_is_registered_once():
    applications = {n for n in dir(keras.applications) if n[0].isupper()}
    assert sorted(s.application for s in BACKBONES.values()) == sorted(applications)
    assert len(applications) == 40 and [a[0] for a in catalog.ARCHITECTURES] == list(BACKBONES)


@pytest.mark.parametrize("name", NAMES)
def test_each_spec_lists_stable_boundaries_a_default_and_its_preprocessing(name):
    spec = BACKBONES[name]
    assert spec.boundaries and spec.blocks and spec.default_boundary in spec.blocks.values()
    starts = list(spec.blocks.values())
    assert [b for b in spec.boundaries if b in starts] == starts  # each block's first, in network order
    assert not [b for b in spec.boundaries if AUTOMATIC.fullmatch(b)]
    assert set(spec.after) <= set(spec.boundaries) and set(spec.cost_below) == set(spec.boundaries)
    shares = [spec.cost_below[b] for b in spec.boundaries]
    assert shares == sorted(shares) and shares[0] >= 0 and shares[-1] <= 1  # grows upward
    assert callable(getattr(keras.applications, spec.module).preprocess_input)
    assert 32 <= spec.min_image_size <= spec.default_image_size and spec.gflop_224 > 0.1
    assert spec.weights_file and spec.weights_file.endswith(".h5")
    node = yaml.safe_load((conf_dir() / "backbone" / f"{name}.yaml").read_text())
    assert node["name"] == name and node["unfreeze_at"] == spec.default_boundary
    assert node["image_size"] >= spec.min_image_size


def test_what_keras_says_about_preprocessing_and_normalisation():
    """EfficientNet(V2), ConvNeXt and MobileNetV3 rescale inside the model; ConvNeXt normalises by LayerNorm."""
    inside = {n for n, s in BACKBONES.items() if s.preprocessing_in_model}
    assert inside == {n for n in NAMES if n.startswith(("efficientnet", "convnext", "mobilenetv3"))}
    assert {n for n, s in BACKBONES.items() if s.normalization == ("LayerNormalization",)} == {
        n for n in NAMES if n.startswith("convnext")
    }
    assert BACKBONES["vgg16"].normalization == () and BACKBONES["inceptionv3"].after[-1] == "mixed9"
    assert (BACKBONES["inceptionv3"].default_image_size, BACKBONES["inceptionv3"].min_image_size) == (299, 75)


def check_cuts(application: str, size: int, names: list[str]) -> None:
    """At each named cut, the lower part followed by the part above equals the whole model within 1e-5."""
    keras.backend.clear_session()
    model = getattr(keras.applications, application)(include_top=False, weights=None, input_shape=(size, size, 3))
    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype("float32")
    whole = np.asarray(model(x, training=False))
    for name in names:
        lower, upper = backbones.split_at(model, name)
        parts = upper(x if lower is None else lower(x, training=False), training=False)
        np.testing.assert_allclose(parts, whole, rtol=0, atol=1e-5 * max(1.0, np.abs(whole).max()), err_msg=name)


def sample(spec, most: int) -> list[str]:
    """At most about `most` of an architecture's listed boundaries, spread through it: its first, default and last."""
    starts = list(spec.blocks.values())
    if len(starts) <= most:
        return starts
    return sorted({*starts[:: len(starts) // (most - 2)], spec.default_boundary, starts[-1]}, key=starts.index)


@pytest.mark.parametrize("name", SMALL)
def test_six_small_architectures_compose_at_a_sample_of_their_listed_boundaries(name):
    spec = BACKBONES[name]
    check_cuts(spec.application, max(spec.min_image_size, 32), sample(spec, 8))


@pytest.mark.slow  # every architecture built once, as the catalog does: about two minutes
def test_the_shipped_registry_is_what_keras_says_now():
    """A Keras upgrade that renames a layer or moves a cut fails here: regenerate with the catalog's main."""
    for name in NAMES:
        assert catalog.read(name) == {
            **BACKBONES[name].__dict__,
            "boundaries": list(BACKBONES[name].boundaries),
            "after": list(BACKBONES[name].after),
            "normalization": list(BACKBONES[name].normalization),
        }, name


@pytest.mark.slow  # the six small ones at every listed boundary, the others at a sample (about 6) of theirs
@pytest.mark.parametrize("name", NAMES)
def test_every_architecture_composes_at_its_listed_boundaries(name):
    spec = BACKBONES[name]
    check_cuts(spec.application, max(spec.min_image_size, 32), sample(spec, 1000 if name in SMALL else 6))


def one_step(name: str) -> tuple[keras.Model, keras.Model, dict[str, np.ndarray]]:
    """Fine-tune a random-init backbone's layers from its default boundary for one step, as the finetune regime
    does (the upper part trainable, run through InferenceMode); returns (lower, upper, upper's weights before)."""
    import tensorflow as tf

    from harness.training.models import InferenceMode

    spec = BACKBONES[name]
    keras.utils.set_random_seed(0)
    base = backbones.build(name, None, 32)
    lower, upper = backbones.split_at(base, spec.default_boundary)
    backbones.set_trainable(lower, False)
    backbones.set_trainable(upper, True)
    before = {v.path: v.numpy().copy() for v in [*lower.weights, *upper.weights]}
    x = lower(np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32"))
    tuned = InferenceMode(upper)
    with tf.GradientTape() as tape:
        energy = keras.ops.mean(keras.ops.square(tuned(x)))
        loss = energy / keras.ops.stop_gradient(energy)  # scale-free: random-init activations are tiny
    grads = tape.gradient(loss, upper.trainable_weights)
    keras.optimizers.SGD(0.1).apply_gradients(zip(grads, upper.trainable_weights, strict=True))
    return lower, upper, before


def test_layernorm_has_no_inference_mode_and_frozen_means_its_scale_and_shift_stay():
    """ConvNeXt normalises by LayerNorm: each image by its own statistics, with none stored, so inference mode
    changes nothing and `frozen` means only that gamma and beta below the cut are not trained; above, they are."""
    lower, upper, before = one_step("convnext_tiny")
    x = np.random.default_rng(1).normal(size=(2, *upper.input.shape[1:])).astype("float32")
    np.testing.assert_array_equal(upper(x, training=True), upper(x, training=False))
    norms = [layer for layer in upper.layers if isinstance(layer, keras.layers.LayerNormalization)]
    trained = {id(v) for v in upper.trainable_weights}
    assert len(norms) == 4 and all(id(v) in trained for n in norms for v in n.weights)  # 3 blocks and the top's
    assert not np.allclose(before[norms[-1].gamma.path], norms[-1].gamma.numpy())  # (the blocks' own LayerScale,
    # 1e-6 at random init, makes their steps tiny)
    below = [layer for layer in lower.layers if isinstance(layer, keras.layers.LayerNormalization)]
    assert below and not any(layer.trainable_weights for layer in below)
    assert all(np.array_equal(before[v.path], v.numpy()) for v in lower.weights)


def test_batchnorm_statistics_stay_in_inference_mode_while_its_scale_and_shift_train():
    lower, upper, before = one_step("mobilenetv3small")
    norms = [layer for layer in upper.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms
    for norm in norms:
        assert np.array_equal(before[norm.moving_mean.path], norm.moving_mean.numpy())
        assert np.array_equal(before[norm.moving_variance.path], norm.moving_variance.numpy())
    assert any(not np.allclose(before[n.gamma.path], n.gamma.numpy()) for n in norms)
    assert all(np.array_equal(before[v.path], v.numpy()) for v in lower.weights)


@pytest.mark.slow  # two architectures of two families, one epoch each phase at 32 px, twice: about a minute
def test_a_sweep_over_architectures_records_each_and_keeps_their_cache_entries_apart(tmp_path, store):
    """Wiring, not learning: two architectures of different families, each recorded with its default boundary
    and estimates, and their cache entries kept apart (every architecture's cuts are composed above)."""
    from conftest import run_cli

    two = ["resnet50v2", "efficientnetv2b0"]
    args = ["-m", f"backbone={','.join(two)}", "backbone.weights=null", "backbone.image_size=32", "data=synthetic",
            "regimes=[frozen,finetune]", "epochs.head=1", "epochs.finetune=1", f"tracking_uri={store}"]  # fmt: skip
    for study in ("cold", "warm"):
        proc = run_cli(*args, f"study={study}", cwd=tmp_path)
        assert proc.returncode == 0, proc.log[-3000:]
    import mlflow

    mlflow.set_tracking_uri(store)
    runs = mlflow.search_runs(experiment_names=["cold", "warm"])
    runs = runs[runs["tags.run_kind"] == "regime"]
    assert len(runs) == 8
    for name in two:
        mine = runs[runs["tags.backbone"] == name]
        assert set(mine["tags.unfreeze_at"]) == {BACKBONES[name].default_boundary}
        assert mine[["metrics.logme", "metrics.knn_loo_acc"]].notna().all().all()
        warm = mine[mine["experiment_id"] == mine["experiment_id"].max()]
        assert set(warm["tags.cache"]) == {"hit"}, name  # its own entries, found again
        for _, by_regime in mine.groupby("tags.regime"):  # the same numbers from the cache as built
            assert by_regime["metrics.test_acc"].nunique() == 1 and by_regime["metrics.logme"].nunique() == 1, name
    frozen = runs[runs["tags.regime"] == "frozen"]
    assert frozen.groupby("tags.backbone")["tags.head_phase_key"].nunique().eq(1).all()  # one head phase each,
    assert frozen["tags.head_phase_key"].nunique() == 2  # none shared between architectures
    assert sorted(frozen["tags.head_phase"]) == ["reused"] * 2 + ["trained"] * 2
