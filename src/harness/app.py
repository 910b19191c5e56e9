"""`python -m harness`: the Hydra entry point. It only wires the config to `harness.job`."""

from __future__ import annotations

import logging
import sys
import warnings

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from harness.config import load
from harness.errors import HarnessError, LostLease
from harness.sweep.ledger import Entry

log = logging.getLogger("harness")

# conf/hydra/launcher/ray.yaml keeps the name Hydra's Ray launcher gives its schema (so that the command is
# `hydra/launcher=ray`); Hydra then validates the file against that schema, as intended, with a warning.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/ray' is validated against ConfigStore schema")


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Run one job. Bad input: one message, exit 2. In a multirun a failed job is recorded and the
    sweep goes on; the sweeper exits non-zero at the end if any job failed.

    Returns the job's objective (`job.OBJECTIVE`) for search sweepers such as Optuna's; None if it failed.
    """
    from harness import signals, tracking
    from harness.jobs import job
    from harness.redaction import install_log_filter
    from harness.sweep import lifecycle as sweep

    signals.take_sigterm()  # in this job's process: a sweep's worker, or the one process of a single run
    install_log_filter()  # Hydra has set up this job's logging: credentials in any line are masked from here on
    hc = HydraConfig.get()
    overrides = [o for o in hc.overrides.task if not o.startswith(f"{sweep.SWEEP_RUN_KEY}=")]
    in_sweep = hc.mode == RunMode.MULTIRUN
    num = hc.job.num if in_sweep else 0  # the ledger's key; a single run has no ledger
    if in_sweep and "optuna" in str(hc.sweeper.get("_target_", "")).lower():
        direction = str(hc.sweeper.get("direction", ""))
        if not direction.endswith("maximize"):
            log.error(
                "hydra/sweeper=%s searches with direction=%s, but each job returns its best validation accuracy "
                "(higher is better): use hydra/sweeper=search (Optuna, maximising) or hydra.sweeper.direction=maximize",
                hc.runtime.choices.get("hydra/sweeper"),
                direction.rsplit(".", 1)[-1],
            )
            sys.exit(2)  # out of the whole search at its first trial, before anything trains
    if in_sweep and cfg.sweep_run is None:
        log.warning(
            "hydra/sweeper=%s: jobs are not checked before the sweep and have no parent run or ledger "
            "(hydra/sweeper=harness does that); this job checks its own inputs, and resume works as usual",
            hc.runtime.choices.get("hydra/sweeper"),
        )
    try:
        typed = load(cfg)  # the one conversion: everything below takes the schema's dataclasses
        if typed.dry_run and not in_sweep:
            from harness.jobs import checks, plan

            checks.check(typed)
            plan.print_plan([(overrides, typed)])
            return None
        results = job.run(typed, overrides, tracking.run_name(overrides))
    except HarnessError as exc:
        log.error("%s", exc)
        sweep.record(cfg.sweep_run, num, Entry("failed", detail=str(exc)))
        if not in_sweep:
            sys.exit(2)
        return None
    except LostLease as exc:
        log.error("job [%s] stopped: %s; its run is left KILLED (another process may hold it now)",
                  " ".join(overrides), exc)  # fmt: skip
        sweep.record(cfg.sweep_run, num, Entry("lost", exc.run_id, exc.reason))
        if not in_sweep:
            sys.exit(1)
        return None
    except Exception as exc:
        log.exception("job [%s] failed", " ".join(overrides))
        sweep.record(cfg.sweep_run, num, Entry("failed", detail=f"{type(exc).__name__}: {exc}"))
        if not in_sweep:
            sys.exit(1)
        return None
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (signals.take_sigterm)
        if in_sweep:
            raise  # the sweeper closes the sweep
        log.error("%s: the job's runs are KILLED (nothing is left RUNNING); the same command runs it again",
                  signals.reason(exc))  # fmt: skip
        sys.exit(signals.exit_status(exc))
    if isinstance(results, job.Elsewhere):
        sweep.record(cfg.sweep_run, num, Entry("elsewhere", results.holder))
        if not in_sweep:
            log.error(
                "this job is running elsewhere (run %s holds it): not done here; run again once it ends, or with "
                "wait_for_others=true to wait for it",
                results.holder,
            )
            sys.exit(1)
        return None
    if isinstance(results, job.Skipped):
        # the report follows this id to the finished run
        sweep.record(cfg.sweep_run, num, Entry("skipped", results.run_id))
        if not in_sweep:
            _print_results(cfg, results.run_id)
        return tracking.run_metric(results.run_id, job.OBJECTIVE)
    finished = tracking.last_job_run_id()
    sweep.record(cfg.sweep_run, num, Entry("finished", finished))
    if not in_sweep:
        _print_results(cfg, finished)
    return job.objective(results)


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
