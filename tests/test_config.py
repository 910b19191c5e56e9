"""Config composition (Hydra compose API on the real conf/ tree), validation and identity."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import open_dict

from harness.config import problems, to_container, validate
from harness.errors import HarnessError
from harness.paths import conf_dir


def make(*overrides: str):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_defaults_compose_to_the_seeds_study():
    cfg = make()
    assert cfg.backbone.name == "vgg16"
    assert cfg.unfreeze_at == "block5_conv1"
    assert cfg.backbone.image_size == 150
    assert list(cfg.regimes) == ["scratch", "frozen", "finetune"]
    assert cfg.lr == 1e-5
    assert problems(cfg) == []


def test_backbone_sets_its_own_default_boundary_and_size():
    cfg = make("backbone=mobilenetv2")
    assert cfg.unfreeze_at == "block_11_expand"
    assert cfg.backbone.image_size == 160
    assert make("backbone=mobilenetv2", "unfreeze_at=block_16_expand").unfreeze_at == "block_16_expand"


def test_quickstart_experiment_needs_no_network():
    cfg = make("+experiment=quickstart")
    assert cfg.data.source == "synthetic"
    assert cfg.backbone.weights is None
    assert problems(cfg) == []


def test_tf_mobilenetv2_val_loss_is_the_study_with_only_its_stopping_rule_changed():
    """Its README compares the two records as the same protocol under two rules: nothing else may differ."""
    base = to_container(make("+experiment=tf_mobilenetv2", "backbone.weights=null"))
    other = to_container(make("+experiment=tf_mobilenetv2_val_loss", "backbone.weights=null"))
    changed = {key for key in base.keys() | other.keys() if base.get(key) != other.get(key)}
    assert changed == {"study", "epochs", "early_stopping"}, changed
    assert other["early_stopping"] == {**base["early_stopping"], "monitor": "val_loss"}
    assert other["epochs"] == {**base["epochs"], "head": 100}
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        seeds = [
            compose("config", [f"+experiment={name}"], return_hydra_config=True).hydra.sweeper.params
            for name in ("tf_mobilenetv2", "tf_mobilenetv2_val_loss")
        ]
    assert seeds[0] == seeds[1] == {"seed": "0,1,2,3,4"}


def _sweep_params(name: str):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("config", [f"+experiment={name}"], return_hydra_config=True).hydra.sweeper.params


def test_tf_mobilenetv2_confirmatory_is_the_val_loss_protocol_on_fresh_seeds():
    """The confirmatory record repeats the exploratory val_loss protocol for frozen and fine-tuned: it may differ
    only in its study, its regimes, its stated targets and seeds that no earlier record used."""
    base = to_container(make("+experiment=tf_mobilenetv2_val_loss", "backbone.weights=null"))
    other = to_container(make("+experiment=tf_mobilenetv2_confirmatory", "backbone.weights=null"))
    changed = {key for key in base.keys() | other.keys() if base.get(key) != other.get(key)}
    assert changed == {"study", "regimes", "targets"}, changed
    assert other["regimes"] == ["frozen", "finetune"]
    assert other["targets"] == {"frozen": ">= 0.97", "finetune_minus_frozen": "> 0"}
    earlier = {s for name in ("tf_mobilenetv2", "tf_mobilenetv2_val_loss", "tf_mobilenetv2_tutorial")
               for s in str(_sweep_params(name)["seed"]).split(",")}  # fmt: skip
    fresh = str(_sweep_params("tf_mobilenetv2_confirmatory")["seed"]).split(",")
    assert len(fresh) == 5 and not earlier & set(fresh)


def test_chollet_book_schedule_is_the_augmented_model_without_a_stopping_rule():
    """The book's schedule: the augmented model's network and data, 10,000 steps, the final weights measured."""
    base = to_container(make("+experiment=chollet_small_convnet_augmented"))
    other = to_container(make("+experiment=chollet_small_convnet_book"))
    changed = {key for key in base.keys() | other.keys() if base.get(key) != other.get(key)}
    assert changed == {"study", "early_stopping", "steps_budget"}, changed
    assert other["early_stopping"]["enabled"] is False and other["steps_budget"]["scratch"] == 10_000
    earlier = set(str(_sweep_params("chollet_small_convnet_augmented")["seed"]).split(","))
    assert not earlier & set(str(_sweep_params("chollet_small_convnet_book")["seed"]).split(","))


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("unfreeze_at=block9_conv1", "unfreeze_at='block9_conv1' is not a layer of backbone vgg16"),
        ("lr=0", "lr=0.0 must be > 0"),
        ("head_lr=-1e-3", "head_lr=-0.001 must be > 0"),
        ("data_fraction=0", "data_fraction=0.0 must be in (0, 1]"),
        ("data_fraction=1.5", "data_fraction=1.5 must be in (0, 1]"),
        ("regimes=[finetune]", "finetune starts from the trained frozen model"),
        ("regimes=[]", "regimes=[] is empty; use a non-empty subset of ['scratch', 'frozen', 'finetune', 'finetune_"),
        ("regimes=[frozen,frozen]", "names a regime twice"),
        ("epochs.head=0", "epochs.head=0 must be >= 1 when regime frozen runs"),
        ("batch_size=0", "batch_size=0 must be >= 1"),
        ("head.dropout=1", "head.dropout=1.0 must be in [0, 1)"),
        ("backbone.image_size=16", "backbone.image_size=16 must be >= 32 for vgg16"),
        ("scratch.image_size=16", "scratch.image_size=16 must be >= 32 for vgg16, or null"),
        ("scratch.bn_momentum=1", "scratch.bn_momentum=1.0 must be in [0, 1) (e.g. 0.99), or null"),
        ("backbone.weights=/no/such/file.h5", "backbone.weights='/no/such/file.h5': no such file"),
        ("data=folder", "data=folder needs data.path: data.path=/path/to/images"),
    ],
)
def test_each_bad_value_is_named_with_what_is_allowed(override, needle):
    cfg = make(override)
    with pytest.raises(HarnessError) as info:
        validate(cfg)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("override", "key", "needle"),
    [
        ("lr=fast", "lr", "Value 'fast' of type 'str' could not be converted to Float"),
        ("seed=1.5", "seed", "could not be converted to Integer"),
        ("optimizer=sgd", "optimizer", "Invalid value 'sgd', expected one of [rmsprop, adam]"),
        (
            "regimes=[frozen,transfer]",
            "regimes[1]",
            "expected one of [scratch, frozen, finetune, finetune_direct, l2sp]",
        ),
        ("data.on_bad_file=ignore", "data.on_bad_file", "expected one of [skip, stop]"),
        ("head.pooling=max", "head.pooling", "expected one of [avg, flatten]"),
        ("precision=fp8", "precision", "expected one of [fp32, bf16, fp16, auto]"),
        ("augment=maybe", "augment", "Value 'maybe' is not a valid bool"),
    ],
)
def test_a_wrong_type_or_choice_fails_at_compose_time_naming_the_key(override, key, needle):
    """The schema (harness.schema) types every key: Hydra refuses the override before anything runs."""
    with pytest.raises(ConfigCompositionException) as info:
        make(override)
    message = f"{info.value} {info.value.__cause__}"
    assert needle in message and f"full_key: {key}" in message, message


def test_the_schema_keeps_choices_as_the_strings_the_yaml_has():
    cfg = make("optimizer=adam", "regimes=[frozen,finetune]")
    assert cfg.optimizer == "adam" and f"{cfg.optimizer}" == "adam"
    assert "finetune" in cfg.regimes and [str(r) for r in cfg.regimes] == ["frozen", "finetune"]
    assert to_container(cfg)["regimes"] == ["frozen", "finetune"]


def test_vgg16_layer_with_mobilenet_says_whose_layer_it_is():
    found = problems(make("backbone=mobilenetv2", "unfreeze_at=block5_conv1"))
    assert len(found) == 1
    assert "is a vgg16 layer" in found[0]
    assert "block_16_expand" in found[0]  # lists the valid MobileNetV2 boundaries


def test_unknown_backbone_is_reported_alone():
    cfg = make()
    with open_dict(cfg):
        cfg.backbone.name = "resnet"
    (problem,) = problems(cfg)
    assert problem.startswith("backbone='resnet' is not known; choose one of [") and "'resnet50v2'" in problem


def schema_defaults(node: type, prefix: str = "") -> dict[str, object]:
    """Every key the schema gives a default, flattened (`early_stopping.patience`); MISSING ones left out."""
    import dataclasses

    from omegaconf import MISSING

    out: dict[str, object] = {}
    for f in dataclasses.fields(node):
        if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory):
            out.update(schema_defaults(f.default_factory, f"{prefix}{f.name}."))
        elif f.default is not dataclasses.MISSING and f.default is not MISSING:
            out[f"{prefix}{f.name}"] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f"{prefix}{f.name}"] = f.default_factory()
    return out


def test_the_schema_and_the_primary_config_give_every_key_the_same_default():
    """One source of defaults: where the schema and conf/config.yaml both set a key, they agree (the YAML's values
    are the ones users run with). Interpolations and Hydra's own nodes are the YAML's alone."""
    from omegaconf import OmegaConf

    from harness.config.schema import Config

    yaml = OmegaConf.to_container(OmegaConf.load(conf_dir() / "config.yaml"), resolve=False)
    flat = {k: v for k, v in flatten_yaml(yaml).items() if not k.startswith(("defaults", "hydra."))}
    schema = schema_defaults(Config)
    both = {k for k in flat if k in schema and not (isinstance(flat[k], str) and "${" in flat[k])}
    assert len(both) > 20  # the comparison covers the config, not a handful of keys
    disagree = {k: (schema[k], flat[k]) for k in both if schema[k] != flat[k]}
    assert disagree == {}


def flatten_yaml(node: object, prefix: str = "") -> dict[str, object]:
    if isinstance(node, dict) and node:
        return {k: v for key, value in node.items() for k, v in flatten_yaml(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def test_the_report_schema_and_its_yaml_give_every_key_the_same_default_and_types_refuse_a_bad_adjustment():
    """conf/report.yaml is typed by harness.report.config: the same keys with the same defaults (its `out`
    interpolates `study`), and an adjustment it does not know fails at compose time, naming the key."""
    from omegaconf import OmegaConf
    from omegaconf.errors import ValidationError

    from harness.report.config import Adjust, ReportConfig
    from harness.report.stats import ADJUSTMENTS

    assert {a.value for a in Adjust} == set(ADJUSTMENTS)  # the choices are the adjustments the report has
    yaml = OmegaConf.to_container(OmegaConf.load(conf_dir() / "report.yaml"), resolve=False)
    flat = {k: v for k, v in flatten_yaml(yaml).items() if not k.startswith(("defaults", "hydra."))}
    assert flat == schema_defaults(ReportConfig)
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        assert compose(config_name="report", overrides=["adjust=bh"]).adjust == "bh"
        with pytest.raises(ConfigCompositionException, match="adjust=bonferroni") as refused:
            compose(config_name="report", overrides=["adjust=bonferroni"])
    assert isinstance(refused.value.__cause__, ValidationError) and "expected one of [holm, bh]" in str(
        refused.value.__cause__
    )
