"""The harness's Ray launcher is a subclass of Hydra's: it relies on what that class's constructor and setup()
store and on Hydra's job runner. Pinned (pyproject: hydra-ray-launcher, ray) to the versions it was written
against; this test fails on an upgrade that moves any of it, before a cluster run would."""

from __future__ import annotations

import inspect
import re
import tomllib
from importlib import metadata

import pytest
from conftest import ROOT
from omegaconf import OmegaConf

ray_launcher = pytest.importorskip("hydra_plugins.hydra_ray_launcher.ray_launcher", reason="needs the [cluster] extra")


def test_the_installed_ray_and_hydra_ray_launcher_are_the_pinned_ones():
    from packaging.requirements import Requirement

    cluster = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["cluster"]
    pins = {Requirement(r).name: Requirement(r).specifier for r in cluster}
    for package in ("hydra-ray-launcher", "ray"):
        assert metadata.version(package) in pins[package], (package, metadata.version(package), pins[package])


def test_what_the_subclass_uses_of_hydras_ray_launcher_is_there():
    from hydra.core.utils import run_job

    from hydra_plugins.harness_ray_launcher.harness_ray_launcher import HarnessRayLauncher

    ray_cfg = OmegaConf.create({"init": {"address": None}, "remote": {"num_cpus": 1}})
    launcher = HarnessRayLauncher(ray=ray_cfg)
    assert launcher.ray_cfg == ray_cfg  # the constructor keeps the `ray` node (init, remote) as ray_cfg
    config, context, task = OmegaConf.create({"hydra": {}}), object(), lambda cfg: None
    launcher.setup(hydra_context=context, task_function=task, config=config)
    assert (launcher.config, launcher.hydra_context, launcher.task_function) == (config, context, task)
    parameters = list(inspect.signature(ray_launcher.RayLauncher.launch).parameters)
    assert parameters == ["self", "job_overrides", "initial_job_idx"]  # the method the subclass replaces
    assert {"hydra_context", "task_function", "config", "job_dir_key", "job_subdir_key"} <= set(
        inspect.signature(run_job).parameters
    )  # what a worker calls, as Hydra's own Ray launcher does
    assert re.search(r"\bself\.ray_cfg\b", inspect.getsource(ray_launcher.RayLauncher.__init__))
