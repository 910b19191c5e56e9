"""`python -m harness`: the Hydra entry point. It only wires the config to `harness.job`."""

from __future__ import annotations

import logging
import sys
import warnings

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from harness.errors import HarnessError

log = logging.getLogger("harness")

# harness/conf/hydra/launcher/ray.yaml keeps the name Hydra's Ray launcher gives its schema (so that the command is
# `hydra/launcher=ray`); Hydra then validates the file against that schema, as intended, with a warning.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/ray' is validated against ConfigStore schema")


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Run one job. Bad input: one message, exit 2. In a multirun a failed job is recorded and the
    sweep goes on; the sweeper exits non-zero at the end if any job failed.

    Returns the job's objective (`job.OBJECTIVE`) for search sweepers such as Optuna's; None if it failed.
    """
    from harness import job, sweep, tracking

    hc = HydraConfig.get()
    overrides = [o for o in hc.overrides.task if not o.startswith(f"{sweep.SWEEP_RUN_KEY}=")]
    in_sweep = hc.mode == RunMode.MULTIRUN
    num = hc.job.num if in_sweep else 0  # the ledger's key; a single run has no ledger
    if in_sweep and cfg.sweep_run is None:
        log.warning(
            "hydra/sweeper=%s: jobs are not checked before the sweep and have no parent run or ledger "
            "(hydra/sweeper=harness does that); this job checks its own inputs, and resume works as usual",
            hc.runtime.choices.get("hydra/sweeper"),
        )
    try:
        if cfg.dry_run and not in_sweep:
            from harness import inputs, plan

            inputs.check(cfg)
            plan.print_plan([(overrides, cfg)])
            return None
        results = job.run(cfg, overrides, tracking.run_name(overrides))
    except HarnessError as exc:
        log.error("%s", exc)
        sweep.record(cfg.sweep_run, num, "failed", str(exc))
        if not in_sweep:
            sys.exit(2)
        return None
    except Exception as exc:
        log.exception("job [%s] failed", " ".join(overrides))
        sweep.record(cfg.sweep_run, num, "failed", f"{type(exc).__name__}: {exc}")
        if not in_sweep:
            sys.exit(1)
        return None
    else:
        if isinstance(results, job.Elsewhere):
            sweep.record(cfg.sweep_run, num, "elsewhere")
            return None
        if isinstance(results, job.Skipped):
            # the report follows this id to the finished run
            sweep.record(cfg.sweep_run, num, "skipped", results.run_id)
            if not in_sweep:
                _print_results(cfg, results.run_id)
            return tracking.run_metric(results.run_id, job.OBJECTIVE)
        sweep.record(cfg.sweep_run, num, "finished")
        if not in_sweep:
            _print_results(cfg, tracking.last_job_run_id())
        return job.objective(results)


def _print_results(cfg: DictConfig, job_run_id: str | None) -> None:
    """A single run ends as a sweep does: its results row and where to browse it."""
    from harness import console, tracking

    experiment_id = tracking.find_experiment(str(cfg.study))
    if experiment_id is not None:
        uri = tracking.resolve_tracking_uri(cfg.tracking_uri)
        console.print_results(experiment_id, uri, [job_run_id] if job_run_id else [], ["seed"])


if __name__ == "__main__":
    main()
