"""`hydra/sweeper=harness`: Hydra's basic sweep (cartesian product of comma lists) with the harness's sweep
around it: every job checked before any trains, `dry_run=true`, a parent run, the ledger and its summary.

Built on Hydra's public Sweeper interface; the launcher is whatever `hydra/launcher` names (basic,
joblib, Ray, submitit), since the jobs receive everything they need as overrides.
"""

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


@dataclass
class HarnessSweeperConf:
    _target_: str = "hydra_plugins.harness_sweeper.harness_sweeper.HarnessSweeper"
    # Hydra runs this module outside sys.modules: real types here, no `from __future__ import annotations`
    max_batch_size: Optional[int] = None  # noqa: UP045 - jobs handed to the launcher at once; None: all
    params: Optional[dict[str, str]] = None  # noqa: UP045 - sweep definitions kept in a config, as in Hydra's


ConfigStore.instance().store(group="hydra/sweeper", name="harness", node=HarnessSweeperConf, provider="harness")


class HarnessSweeper(Sweeper):
    """See the module docstring; the work is in `harness.sweep`."""

    def __init__(self, max_batch_size: int | None = None, params: dict[str, str] | None = None) -> None:
        self.max_batch_size = max_batch_size
        self.params = params or {}
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from harness.redaction import install_log_filter

        install_log_filter()  # the launcher logs every job's overrides: credentials masked
        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> list[list[JobReturn]]:
        from harness import signals
        from harness.redaction import redact_data
        from harness.sweep import lifecycle as sweep

        assert self.config is not None and self.hydra_context is not None and self.launcher is not None
        loader = self.hydra_context.config_loader
        parser = OverridesParser.create(config_loader=loader)
        jobs = sweep.expand(parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()] + list(arguments)))
        configs = [(overrides, loader.load_sweep_config(self.config, overrides)) for overrides in jobs]
        run_id = sweep.start(self.config, configs, preflight=getattr(self.launcher, "preflight", None))
        signals.take_sigterm()  # from here a SIGTERM closes the parent run as Ctrl-C does

        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        # Hydra's record of the sweep, as Hydra's own sweepers write it, with credentials masked
        OmegaConf.save(OmegaConf.create(redact_data(OmegaConf.to_container(self.config))), sweep_dir / "multirun.yaml")
        tagged = [[*overrides, f"{sweep.SWEEP_RUN_KEY}={run_id}"] for overrides in jobs]
        size = self.max_batch_size or len(tagged)
        returns: list[list[JobReturn]] = []
        try:
            for first in range(0, len(tagged), size):
                returns.append(list(self.launcher.launch(tagged[first : first + size], initial_job_idx=first)))
        except Exception as exc:  # a launcher that lost a worker (killed for memory) raises; the ledger tells which
            log.error("sweep: the launcher stopped: %s: %s", type(exc).__name__, exc)
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: the parent ends KILLED, not left RUNNING
            sweep.interrupt(run_id, jobs, signals.reason(exc))
            sys.exit(signals.exit_status(exc))
        status = sweep.finish(run_id, jobs)
        if status:
            sys.exit(status)
        return returns
