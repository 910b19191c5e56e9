"""What each regime trains: Chollet's trainable-weight checks, extended, and BatchNorm left alone."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from harness import data
from harness.config import convert
from harness.paths import conf_dir
from harness.training import augmentation, backbones, models
from harness.training.regime import Context, Recipe
from harness.training.regimes import finetune, frozen, scratch
from harness.training.trainer import Arrays, Trainer, compute_features


def make(*overrides: str):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return convert(compose(config_name="config", overrides=list(overrides)))


def context(cfg, arrays, trainer, base=None, start=None) -> Context:
    """What a job hands a regime: here the backbone as built (a job resets it to its loaded weights)."""
    return Context(Recipe.from_cfg(cfg), arrays, trainer, None if base is None else lambda: base, start)


def test_vgg16_trainable_weights_30_to_4_and_block5_to_10():
    cfg = make("head=flatten", "backbone.image_size=64")
    base = backbones.build("vgg16", None, 64)
    head = models.build_head(base.output.shape[1:], cfg.head, 2)
    full = models.full_model("vgg16", 64, base, head)
    assert models.count_trainable(full) == 30  # Chollet: 13 convs x 2 + 2 dense x 2

    models.frozen_stage("vgg16", 64, base)  # freezes the whole base, as the frozen regime does
    assert models.count_trainable(models.full_model("vgg16", 64, base, head)) == 4

    stage, upper = finetune.parts(Recipe.from_cfg(cfg), frozen.State(base, head, 0))
    trained = {w.path for w in upper.trainable_weights} | {w.path for w in head.trainable_weights}
    assert len(trained) == 10
    assert {p.split("/")[0] for p in trained} == {"block5_conv1", "block5_conv2", "block5_conv3", "head"}
    assert models.count_trainable(stage) == 0


def test_block4_boundary_unfreezes_six_convs():
    cfg = make("unfreeze_at=block4_conv1", "backbone.image_size=64")
    base = backbones.build("vgg16", None, 64)
    head = models.build_head(base.output.shape[1:], cfg.head, 2)
    models.frozen_stage("vgg16", 64, base)
    _, upper = finetune.parts(Recipe.from_cfg(cfg), frozen.State(base, head, 0))
    assert models.count_trainable(upper) == 12


@pytest.mark.slow  # fine-tunes MobileNetV2
def test_finetuning_mobilenet_leaves_batchnorm_statistics_unchanged(tmp_path):
    """The TensorFlow tutorial's rule: BatchNorm stays in inference mode while fine-tuning. Random weights
    and generated images suffice to see whether the moving statistics move."""
    cfg = make(
        "backbone=mobilenetv2",
        "backbone.weights=null",
        "backbone.image_size=96",
        "unfreeze_at=block_14_expand",
        "epochs.head=1",
        "epochs.finetune=1",
        "lr=1e-3",
        "batch_size=16",
    )
    folder = data.scan_folder(data.ensure_synthetic(tmp_path, {"train": 10, "validation": 4}))
    pick = {s: folder.splits[s] for s in ("train", "validation")}
    arrays = Arrays(
        {s: data.load_images(v.files, 96) for s, v in pick.items()}, {s: v.labels for s, v in pick.items()}, 2
    )
    trainer = Trainer(2, 16, 0, "rmsprop", None, lambda regime, first: [])
    base = backbones.build("mobilenetv2", None, 96)
    state = frozen.train(context(cfg, arrays, trainer, base)).state

    bn = [layer for layer in base.layers if layer.__class__.__name__ == "BatchNormalization"]
    upper_bn = [layer for layer in bn if layer.name.startswith(("block_14", "block_15", "block_16", "Conv_1"))]
    moving = {layer.name: [w.copy() for w in layer.get_weights()[2:]] for layer in bn}
    gamma = {layer.name: layer.get_weights()[0].copy() for layer in upper_bn}
    conv_before = base.get_layer("block_15_project").get_weights()[0].copy()

    finetune.train(context(cfg, arrays, trainer, start=state))

    for layer in bn:
        for before, after in zip(moving[layer.name], layer.get_weights()[2:], strict=True):
            np.testing.assert_array_equal(before, after, err_msg=f"{layer.name} moving statistics changed")
    assert not np.array_equal(conv_before, base.get_layer("block_15_project").get_weights()[0])  # it did train
    assert any(not np.array_equal(gamma[n], base.get_layer(n).get_weights()[0]) for n in gamma)


@pytest.mark.slow  # the shared photographs and weights, trained twice
def test_mixed_precision_keeps_the_output_float32_and_matches_fp32(cats_dogs, mobilenet_weights):
    import keras

    cfg = make(
        "backbone=mobilenetv2",
        f"backbone.weights={mobilenet_weights}",
        "backbone.image_size=64",
        "epochs.head=3",
        "head_lr=1e-3",
    )
    folder = data.scan_folder(cats_dogs)
    pick = {s: data.subsample(folder.splits[s], 0.1, 0, folder.class_names) for s in ("train", "validation", "test")}
    arrays = Arrays(
        {s: data.load_images(v.files, 64) for s, v in pick.items()}, {s: v.labels for s, v in pick.items()}, 2
    )
    accuracy = {}
    try:
        for policy in ("float32", "mixed_bfloat16"):
            keras.mixed_precision.set_global_policy(policy)
            base = backbones.build("mobilenetv2", str(mobilenet_weights), 64)
            trainer = Trainer(2, 32, 0, "rmsprop", None, lambda regime, first: [])
            result = frozen.train(context(cfg, arrays, trainer, base))
            state = result.state
            probs = state.head(keras.ops.zeros((1, *base.output.shape[1:]), dtype=base.output.dtype))
            assert (
                state.head.layers[-1].compute_dtype == "float32"
                and keras.backend.standardize_dtype(probs.dtype) == "float32"
            )
            accuracy[policy] = result.test["test_acc"]
        assert base.get_layer("Conv1").compute_dtype == "bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert accuracy["float32"] > 0.75, accuracy  # real features separate cats from dogs
    assert abs(accuracy["mixed_bfloat16"] - accuracy["float32"]) <= 0.05, accuracy  # 100 test images


def test_steps_per_execution_changes_speed_not_numbers(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3, 3, 16)).astype("float32")
    y = (x[:, 0, 0, 0] > 0).astype("int64")
    head_cfg = OmegaConf.create({"pooling": "avg", "units": 8, "dropout": 0.5})

    def history() -> dict[str, list[float]]:
        keras.utils.set_random_seed(0)
        inputs = keras.Input((3, 3, 16))
        model = keras.Model(inputs, models.build_head((3, 3, 16), head_cfg, 2)(inputs))
        models.compile_for(model, "rmsprop", 1e-2, 2)
        t = models.targets(y, 2)
        fit = model.fit(
            models.dataset(x[:150], t[:150], 16, shuffle_seed=0),
            validation_data=models.dataset(x[150:], t[150:], 16),
            epochs=3,
            verbose=0,
        )
        return fit.history

    batched = history()
    monkeypatch.setattr(models, "STEPS_PER_EXECUTION", 1)
    assert history() == batched and len(batched["val_loss"]) == 3


def test_auto_precision_picks_bf16_only_where_it_was_measured_faster(tmp_path):
    from harness.training import runtime

    native = frozenset({"avx512f", "avx512_bf16"})
    assert runtime.resolve_precision("auto", "vgg16", native, gpus=0) == "bf16"  # 12 -> 29 images/s
    assert runtime.resolve_precision("auto", "vgg16", frozenset({"amx_bf16"}), gpus=0) == "bf16"
    assert runtime.resolve_precision("auto", "mobilenetv2", native, gpus=0) == "fp32"  # 121 -> 100 images/s
    assert runtime.resolve_precision("auto", "vgg16", frozenset({"avx512f", "avx2"}), gpus=0) == "fp32"  # emulated
    assert runtime.resolve_precision("auto", "mobilenetv2", frozenset(), gpus=1) == "fp16"
    assert runtime.resolve_precision("bf16", "mobilenetv2", frozenset(), gpus=0) == "bf16"  # asked for: as asked
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512_bf16 amx_tile\nbugs\t\t: spectre\n")
    assert runtime.cpu_flags(str(cpuinfo)) == {"fpu", "sse2", "avx512_bf16", "amx_tile"}
    assert runtime.cpu_flags(str(tmp_path / "absent")) == frozenset()


@pytest.mark.slow
def test_scratch_inference_statistics_follow_training_with_its_bn_momentum(tmp_path):
    """Why scratch predicted one class for every image in the tf_mobilenetv2 study: with MobileNetV2's own
    momentum (0.999) the moving statistics after a short run still hold their initial 0 / 1 and the
    network's output is the same for every image; at scratch.bn_momentum=0.9 the outputs differ.
    The backbone is built for the resized input (scratch.image_size); the saved classifier resizes it itself."""
    folder = data.scan_folder(data.ensure_synthetic(tmp_path, {"train": 32, "validation": 16}))
    pick = {s: folder.splits[s] for s in ("train", "validation")}
    arrays = Arrays(
        {s: data.load_images(v.files, 64) for s, v in pick.items()}, {s: v.labels for s, v in pick.items()}, 2
    )
    spread = {}
    for momentum in ("null", "0.9"):
        cfg = make(
            "backbone=mobilenetv2",
            "backbone.image_size=64",
            "scratch.image_size=48",
            f"scratch.bn_momentum={momentum}",
            "epochs.scratch=5",
            "batch_size=4",
            "log_model=true",
        )
        trainer = Trainer(2, 4, 0, "rmsprop", None, lambda regime, first: [])
        result = scratch.train(context(cfg, arrays, trainer))
        assert result.model.input.shape[1:] == (64, 64, 3)  # the images every regime gets, resized inside
        layers = [layer for layer in result.model.layers if hasattr(layer, "layers")]
        bn = [x for layer in layers for x in layer.layers if isinstance(x, keras.layers.BatchNormalization)]
        assert len(bn) == 52 and {x.momentum for x in bn} == {0.999 if momentum == "null" else 0.9}
        spread[momentum] = float(np.std(result.model.predict(arrays.x["validation"], verbose=0)))
    assert spread["null"] < 1e-3 < spread["0.9"], spread


@pytest.mark.slow  # trains on pixels and on features
def test_augmented_training_validates_on_staged_features_as_on_pixels(tmp_path):
    """With augmentation only the training images go through the frozen stage every epoch: validation and test
    are staged once, and their numbers are those of the whole classifier evaluated on their pixels."""
    cfg = make(
        "backbone=mobilenetv2",
        "backbone.weights=null",
        "backbone.image_size=32",
        "augment=true",
        "epochs.head=2",
        "head_lr=1e-2",
        "log_model=true",
    )
    folder = data.scan_folder(data.ensure_synthetic(tmp_path, {"train": 8, "validation": 4, "test": 4}))
    splits = folder.splits
    arrays = Arrays(
        {s: data.load_images(v.files, 32) for s, v in splits.items()}, {s: v.labels for s, v in splits.items()}, 2
    )
    staged = []

    def features(stage, arrays, cut):
        staged.append(sorted(arrays.x))
        return compute_features(stage, arrays)

    trainer = Trainer(
        2, 4, 0, "rmsprop", augmentation.from_settings(cfg.augmentation, cfg.seed), lambda r, f: [], features=features
    )
    keras.utils.set_random_seed(0)
    result = frozen.train(context(cfg, arrays, trainer, backbones.build("mobilenetv2", None, 32)))
    assert staged == [["test", "validation"]]
    models.compile_for(result.model, "rmsprop", 1e-2, 2)
    for split, (loss, acc) in (
        ("validation", (result.history["val_loss"][-1], result.history["val_acc"][-1])),
        ("test", (result.test["test_loss"], result.test["test_acc"])),
    ):
        y = models.targets(arrays.y[split], 2)
        on_pixels = result.model.evaluate(models.dataset(arrays.x[split], y, 4), verbose=0)
        np.testing.assert_allclose(on_pixels, [loss, acc], rtol=1e-5, atol=1e-6)
