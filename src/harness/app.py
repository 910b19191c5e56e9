"""`python -m harness`: the Hydra entry point. It only wires the config to `harness.job`."""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from harness.errors import HarnessError
from harness.paths import conf_dir

log = logging.getLogger("harness")


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Run one job. Bad input: one message, exit 2. In a multirun a failed job is recorded and the
    sweep goes on; the sweep callback exits non-zero at the end if any job failed."""
    from harness import job, sweep

    hc = HydraConfig.get()
    overrides = list(hc.overrides.task)
    in_sweep = hc.mode == RunMode.MULTIRUN
    try:
        results = job.run(cfg, overrides, " ".join(overrides) or "defaults")
    except HarnessError as exc:
        log.error("%s", exc)
        sweep.record("failed", str(exc))
        if not in_sweep:
            sys.exit(2)
    except Exception as exc:
        log.exception("job [%s] failed", " ".join(overrides))
        sweep.record("failed", f"{type(exc).__name__}: {exc}")
        if not in_sweep:
            sys.exit(1)
    else:
        if isinstance(results, job.Skipped):
            sweep.record("skipped", results.run_id)  # the report follows this id to the finished run
        else:
            sweep.record("finished")


if __name__ == "__main__":
    main()
