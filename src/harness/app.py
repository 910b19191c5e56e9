"""`python -m harness`: the Hydra entry point. It only wires the config to `harness.job`."""

from __future__ import annotations

import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from harness.errors import HarnessError
from harness.paths import conf_dir

log = logging.getLogger("harness")


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Run one job of the study; bad input prints one message and exits with status 2."""
    from harness import job

    hc = HydraConfig.get()
    overrides = list(hc.overrides.task)
    name = " ".join(overrides) or "defaults"
    try:
        job.run(cfg, overrides, name)
    except HarnessError as exc:
        log.error("%s", exc)
        sys.exit(2)


if __name__ == "__main__":
    main()
