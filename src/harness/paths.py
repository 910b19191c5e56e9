"""Where the project lives, so default paths work from any working directory."""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

PACKAGE_DIR = Path(__file__).resolve().parent


def project_root() -> Path:
    """The checkout holding pyproject.toml (editable install), else the current directory: where the default
    store (`mlruns/`) and cache (`.cache/`) live, and what `${project_root:}` means in configs."""
    for parent in PACKAGE_DIR.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "src" / "harness").is_dir():
            return parent
    return Path.cwd().resolve()


def conf_dir() -> Path:
    """The Hydra config tree: conf/ at the project's top, shipped inside the package as `harness.conf` so that
    any install, editable or not, finds it (importlib finds it wherever the install put it)."""
    import importlib.resources

    return Path(str(importlib.resources.files("harness.conf")))


def register_resolvers() -> None:
    """`${project_root:}` in configs: default data and store paths that do not depend on the cwd."""
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(project_root()))


register_resolvers()
