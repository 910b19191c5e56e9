"""The package's shape, kept: layers that import only downward, no cycles, modules a reader can hold in mind.

Imports are read from the source (every `import`, function-level ones included, `if TYPE_CHECKING:` blocks
left out), so a cycle cannot hide behind an import moved into a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# each package of src/harness/ and the packages it may import (at runtime); the README's map of the code
LAYERS: dict[str, set[str]] = {
    "training": set(),
    "config": {"training"},
    "data": set(),
    "tracking": {"config", "training"},
    "jobs": {"config", "data", "tracking", "training"},
    "sweep": {"config", "jobs", "tracking", "training"},
    "report": {"config", "sweep", "tracking", "training"},
}
SHARED = {"errors", "files", "paths", "record_version", "redaction", "signals"}  # small modules every layer may use
MAX_LINES = 400


def modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "harness").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The harness modules `name` imports at runtime (a name imported from a package counts as its module
    when it is one, as Python's import system reads it)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
                submodules = {f"{base}.{a.name}" for a in node.names} & known
                found.update(submodules)  # `from harness.report import stats`: the module stats, not the package
                if len(submodules) < len(node.names):
                    found.add(base)  # a name defined in `base` itself
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    visit([child])

    visit(ast.parse(path.read_text()).body)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "harness"


def test_the_reader_finds_every_harness_module():
    """The parser sees the imports it should (a broken reader would make the next tests pass vacuously)."""
    g = graph()
    assert len(g) > 50
    assert "harness.training.specs" in g["harness.config.schema"]
    assert "harness.jobs.claims" in g["harness.jobs.job"]
    assert "harness.tracking.owner" in g["harness.jobs.leases"]


def test_packages_import_only_the_layers_below_them():
    wrong = []
    for module, deps in graph().items():
        own = layer(module)
        if own not in LAYERS:
            continue  # the entry point (app), the root package and the shared modules
        for dep in deps:
            other = layer(dep)
            if other != own and other not in LAYERS[own] | SHARED | {"harness"}:
                wrong.append(f"{module} imports {dep} ({own} may use {sorted(LAYERS[own])})")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_between_modules():
    g = graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(g[node]):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], dep] if dep in path else [node, dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("path", sorted(modules().values()), ids=lambda p: str(p.relative_to(SRC)))
def test_modules_stay_short(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_every_config_folder_ships_in_the_wheel():
    """conf/ travels as harness.conf: each of its folders must be a listed package, or the wheel drops its YAML
    (and setuptools warns "Package would be ignored" on every install)."""
    import tomllib

    root = SRC.parent
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {p.parent for p in (root / "conf").rglob("*.yaml")} | {root / "conf"}
    needed = {".".join(("harness", *f.relative_to(root).parts)) for f in folders}
    needed |= {name.rsplit(".", 1)[0] for name in needed if name.count(".") > 2}  # parents: harness.conf.hydra
    assert needed <= listed, sorted(needed - listed)


def test_every_source_package_ships_in_the_wheel():
    """Each folder of src/ with Python in it must be a listed package, or the wheel leaves it out and an installed
    harness fails at import (the regime modules' folder was missed once; the slow wheel test caught it)."""
    import tomllib

    listed = set(tomllib.loads((SRC.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(SRC).parts) for p in SRC.rglob("*.py") if "egg-info" not in str(p)}
    assert found <= listed, sorted(found - listed)
