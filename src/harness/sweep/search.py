"""A search sweeper must maximise what each job returns, its best validation accuracy: checked once, as the
multirun starts, by a Hydra callback (`hydra.callbacks` in conf/config.yaml), before any job runs."""

from __future__ import annotations

import logging
import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class SearchDirection(Callback):
    """Refuses Optuna's sweeper set to minimise (its own default): it would search for the worst model."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweeper = config.hydra.sweeper
        if not str(sweeper.get("_target_", "")).endswith("OptunaSweeper"):
            return
        direction = str(sweeper.get("direction", ""))
        if not direction.endswith("maximize"):
            log.error(
                "hydra/sweeper=%s searches with direction=%s, but each job returns its best validation accuracy "
                "(higher is better): use hydra/sweeper=search (Optuna, maximising) or hydra.sweeper.direction=maximize",
                config.hydra.runtime.choices.get("hydra/sweeper"),
                direction.rsplit(".", 1)[-1],
            )
            sys.exit(2)  # before the search's first trial: nothing trains, nothing is recorded
