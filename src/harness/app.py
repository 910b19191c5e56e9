"""`python -m harness`: the Hydra entry point. It only wires the config to one job (`harness.sweep.outcome`)."""

from __future__ import annotations

import logging
import sys
import warnings

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

log = logging.getLogger("harness")

# conf/hydra/launcher/ray.yaml keeps the name Hydra's Ray launcher gives its schema (so that the command is
# `hydra/launcher=ray`); Hydra then validates the file against that schema, as intended, with a warning.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/ray' is validated against ConfigStore schema")


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Run one job and record how it ended (`sweep.outcome`). Bad input: one message, exit 2. In a multirun a
    failed job is recorded and the sweep goes on; the sweeper exits non-zero at the end if any job failed.

    Returns the job's objective (`job.OBJECTIVE`) for search sweepers such as Optuna's; None if it failed.
    """
    from harness import signals
    from harness.redaction import install_log_filter
    from harness.sweep import lifecycle as sweep
    from harness.sweep import outcome

    signals.take_sigterm()  # in this job's process: a sweep's worker, or the one process of a single run
    install_log_filter()  # Hydra has set up this job's logging: credentials in any line are masked from here on
    hc = HydraConfig.get()
    overrides = [o for o in hc.overrides.task if not o.startswith(f"{sweep.SWEEP_RUN_KEY}=")]
    in_sweep = hc.mode == RunMode.MULTIRUN
    if in_sweep and cfg.sweep_run is None:
        log.warning(
            "hydra/sweeper=%s: jobs are not checked before the sweep and have no parent run or ledger "
            "(hydra/sweeper=harness does that); this job checks its own inputs, and resume works as usual",
            hc.runtime.choices.get("hydra/sweeper"),
        )
    try:
        ending = outcome.run_job(cfg, overrides)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (signals.take_sigterm)
        if in_sweep:
            raise  # the sweeper closes the sweep
        log.error("%s: the job's runs are KILLED (nothing is left RUNNING); the same command runs it again",
                  signals.reason(exc))  # fmt: skip
        sys.exit(signals.exit_status(exc))
    if ending.entry is not None:  # a single run has no ledger: record() then does nothing
        sweep.record(cfg.sweep_run, hc.job.num if in_sweep else 0, ending.entry)
    if not in_sweep:
        if ending.single_run_error:
            log.error("%s", ending.single_run_error)
        if ending.shown:
            _print_results(cfg, ending.shown)
        if ending.status:
            sys.exit(ending.status)
    return ending.objective


def _print_results(cfg: DictConfig, job_run_id: str | None) -> None:
    """A single run ends as a sweep does: its results row and where to browse it."""
    from harness import tracking
    from harness.sweep import console

    experiment_id = tracking.find_experiment(str(cfg.study))
    if experiment_id is not None:
        uri = tracking.resolve_tracking_uri(cfg.tracking_uri)
        console.print_results(experiment_id, uri, [job_run_id] if job_run_id else [], ["seed"])


if __name__ == "__main__":
    main()
