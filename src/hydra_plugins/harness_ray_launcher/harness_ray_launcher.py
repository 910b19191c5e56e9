"""`hydra/launcher=ray`: Hydra's Ray launcher, with each job collected on its own.

Hydra's Ray launcher waits for its jobs in order and raises at the first lost one (a worker killed for
memory or by hand), leaving the others running unobserved while the sweep ends. Here every job is
waited for; a lost one is logged and left out of the returns, and the sweep's ledger reports it as
missing (non-zero exit), exactly as with the basic launcher. The configuration (`ray.init`,
`ray.remote`) is Hydra's Ray launcher's; `conf/hydra/launcher/ray.yaml` sets the per-job resources.
Needs the `[cluster]` extra; without it this module defines nothing.
"""

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

try:
    from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher
except ImportError:  # the [cluster] extra is not installed
    RayLauncher = None  # type: ignore[assignment,misc]

log = logging.getLogger(__name__)


def _run_on_worker(
    hydra_context: HydraContext, sweep_config: DictConfig, task_function: TaskFunction, singleton_state: Any
) -> JobReturn:
    """What a Ray worker runs: Hydra's own job runner with the driver's config store and plugins."""
    setup_globals()
    Singleton.set_state(singleton_state)
    HydraConfig.instance().set_config(sweep_config)
    return run_job(
        hydra_context=hydra_context,
        task_function=task_function,
        config=sweep_config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )


def probe_address(address: str | None, timeout_s: float = 5.0) -> None:
    """Fail in seconds, before the sweep records anything, when no Ray head listens at `address` (or
    RAY_ADDRESS): ray.init itself waits for minutes on an address where nothing answers."""
    import os
    import socket

    from harness.errors import HarnessError

    address = address or os.environ.get("RAY_ADDRESS")
    if not address or address == "auto" or address.startswith("ray://"):
        return  # a new local cluster, Ray's own discovery, or Ray Client: left to ray.init
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return
    except (OSError, ValueError) as exc:
        raise HarnessError(
            f"hydra.launcher.ray.init.address={address!r}: no Ray head answers there ({exc}); start one "
            "(ray start --head --port=6379) or give its host:port (or RAY_ADDRESS)"
        ) from exc


if RayLauncher is not None:

    class HarnessRayLauncher(RayLauncher):
        def preflight(self) -> None:
            """Called by the harness sweeper after the jobs' checks and before the sweep's parent run."""
            probe_address(self.ray_cfg.init.get("address"))

        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
            import ray

            assert self.config is not None and self.hydra_context is not None and self.task_function is not None
            setup_globals()
            Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
            if not ray.is_initialized():
                init: dict[str, Any] = OmegaConf.to_container(self.ray_cfg.init, resolve=True) or {}  # type: ignore[assignment]
                ray.init(**{k: v for k, v in init.items() if v is not None})  # RAY_ADDRESS works when address is None
            remote: dict[str, Any] = OmegaConf.to_container(self.ray_cfg.remote, resolve=True) or {}  # type: ignore[assignment]
            task = ray.remote(**remote)(_run_on_worker) if remote else ray.remote(_run_on_worker)
            log.info("Ray launcher: %d jobs on %s", len(job_overrides), ray.get_runtime_context().gcs_address)
            pending: dict[Any, tuple[int, str]] = {}
            for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
                sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
                with open_dict(sweep_config):
                    sweep_config.hydra.job.id = f"ray_{idx}"
                    sweep_config.hydra.job.num = idx
                ref = task.remote(self.hydra_context, sweep_config, self.task_function, Singleton.get_state())
                pending[ref] = (idx, " ".join(filter_overrides(overrides)))
                log.info("\t#%d : %s", idx, pending[ref][1])
            returns: dict[int, JobReturn] = {}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                idx, described = pending.pop(done[0])
                try:
                    returns[idx] = ray.get(done[0])
                except Exception as exc:  # noqa: BLE001 - one lost job must not hide the others
                    log.error("Ray launcher: job #%d [%s] lost: %s", idx, described, type(exc).__name__)
            return [returns[idx] for idx in sorted(returns)]
