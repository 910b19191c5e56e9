"""The regime registry: a regime is its module and its registry line, nothing else in src/ names it, and adding a
regime or a backbone leaves every other cache key as it was."""

from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from harness import data
from harness.config import convert
from harness.jobs import identity
from harness.jobs.features import cache_keys
from harness.jobs.inputs import prepare
from harness.paths import conf_dir
from harness.training import architectures, specs

SRC = Path(__file__).resolve().parents[1] / "src"
# where a regime may be named: its module (and the other regime modules it builds on) and the registry
ALLOWED = {SRC / "harness/training/specs.py", *(SRC / "harness/training/regimes").glob("*.py")}


def named_regimes(path: Path, root: Path = SRC) -> list[str]:
    """Each place in a module's code that uses a regime's name as a dispatch key (a string equal to it, or an
    f-string built on it, `f"scratch_{key}"`) or as one of its own identifiers (a variable, attribute, parameter,
    function or class). Docstrings, comments, keyword arguments of other libraries (`dataclass(frozen=True)`) and
    comparison keys that name two regimes (`finetune_minus_frozen`) do not count."""
    names = set(specs.NAMES)
    tree = ast.parse(path.read_text())
    in_fstring = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
    identifiers = {
        ast.Name: lambda n: n.id,
        ast.Attribute: lambda n: n.attr,
        ast.arg: lambda n: n.arg,
        ast.FunctionDef: lambda n: n.name,
        ast.ClassDef: lambda n: n.name,
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            built_on = id(node) in in_fstring and any(text.startswith((f"{n}_", f"{n}.")) for n in names)
            if text in names or (built_on and "_minus_" not in text):
                found.append((node.lineno, f"string {text!r}"))
        elif type(node) in identifiers and identifiers[type(node)](node) in names:
            found.append((node.lineno, f"identifier {identifiers[type(node)](node)!r}"))
    return [f"{path.relative_to(root)}:{line} {what}" for line, what in sorted(found)]


def test_a_regime_is_named_only_in_its_module_and_the_registry():
    found = [hit for path in sorted(SRC.rglob("*.py")) if path not in ALLOWED for hit in named_regimes(path)]
    assert found == []


def test_the_name_check_finds_a_dispatch_on_a_regime_name(tmp_path):
    """The check above is not vacuous: the forms a dispatch takes are found, labels and comparison keys are not."""
    module = tmp_path / "probe.py"
    module.write_text(
        'if "finetune" in regimes:\n    results["frozen"] = 1\nscratch = 2\nkey = f"scratch_{k}"\n'
        'label = "fine-tuned"\ncolumn = "finetune_minus_frozen"\n'
    )
    hits = named_regimes(module, tmp_path)
    assert [h.split(" ", 1)[1] for h in hits] == [
        "string 'finetune'",
        "string 'frozen'",
        "identifier 'scratch'",
        "string 'scratch_'",
    ]


def job_keys(photos: Path, *overrides: str) -> dict[str, object]:
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = convert(compose(config_name="config", overrides=[
            "data=folder", f"data.path={photos}", "backbone=mobilenetv2", "backbone.weights=null",
            "regimes=[frozen,finetune]", *overrides,
        ]))  # fmt: skip
    keys = cache_keys(prepare(cfg))
    return {"images": keys.images, "features": keys.features, "states": keys.states}


@pytest.fixture
def photos(tmp_path):
    return data.ensure_synthetic(tmp_path, {"train": 4, "validation": 2, "test": 2})


def edited_sources(monkeypatch, edited: set[str]) -> None:
    """Make every module in `edited` read as if a line had been added to it (a new backbone or regime)."""
    original = identity._module_sources

    def sources(modules):
        return [src + (b"\n# one more line\n" if name in edited else b"") for name, src in
                zip(modules, original(modules), strict=True)]  # fmt: skip

    monkeypatch.setattr(identity, "_module_sources", sources)
    identity.code_identity.cache_clear()


def test_adding_a_regime_or_a_backbone_leaves_the_other_cache_keys_as_they_were(photos, monkeypatch):
    identity.code_identity.cache_clear()
    before = job_keys(photos)
    registries = {"harness.training.specs", "harness.training.architectures", "harness.training.regimes.l2sp"}
    registries |= {"harness.training.regimes.finetune_direct"}
    edited_sources(monkeypatch, registries)  # a line added to each registry, a regime module edited
    spec = architectures.BACKBONES["mobilenetv2"]
    monkeypatch.setitem(architectures.BACKBONES, "mobilenetv3small", spec)  # and a backbone registered
    monkeypatch.setitem(specs.REGIMES, "new_one", specs.REGIMES["finetune_direct"])  # and a regime
    assert job_keys(photos) == before
    identity.code_identity.cache_clear()


def test_the_code_that_produces_an_entry_is_in_its_key(photos, monkeypatch):
    """The frozen regime's module decides its stored head phase, and nothing of the features."""
    identity.code_identity.cache_clear()
    before = job_keys(photos)
    edited_sources(monkeypatch, {"harness.training.regimes.frozen"})
    after = job_keys(photos)
    assert after["images"] == before["images"] and after["features"] == before["features"]
    assert after["states"]["frozen"] != before["states"]["frozen"]
    edited_sources(monkeypatch, {"harness.training.backbones"})
    assert job_keys(photos)["features"] != before["features"]
    identity.code_identity.cache_clear()


def test_a_typed_config_crosses_to_a_worker_process_as_the_same_types():
    """joblib and Ray pickle the typed config: the nodes made from the registry must unpickle as the same classes."""
    import pickle

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = convert(compose(config_name="config", overrides=["regimes=[frozen,l2sp]", "l2sp.alpha=0.5"]))
    again = pickle.loads(pickle.dumps(cfg))
    assert again == cfg and type(again.epochs) is type(cfg.epochs) and type(again.l2sp) is type(cfg.l2sp)


def test_every_regime_module_declares_its_spec_and_is_registered():
    modules = sorted(p.stem for p in (SRC / "harness/training/regimes").glob("*.py") if p.stem != "__init__")
    for name in modules:
        module = importlib.import_module(f"harness.training.regimes.{name}")
        assert module.SPEC.name in specs.REGIMES and specs.REGIMES[module.SPEC.name] is module.SPEC, name
    assert len(modules) == len(specs.REGIMES)
    for spec in specs.REGIMES.values():
        assert all(b in specs.REGIMES for b in spec.compared_with) and spec.starts_from in (None, *specs.REGIMES)
        assert importlib.util.find_spec(spec.train.__module__) is not None
