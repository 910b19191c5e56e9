"""A multirun as a whole: every job checked before any trains, a parent run, a ledger, a summary.

The Hydra callback `SweepCallback` (wired in conf/config.yaml) runs in the launching process:

- on start, it expands the sweep exactly as Hydra's basic sweeper will, composes every job's config and
  checks each (config values, data folder, weights), so a bad value in the fifth job stops the sweep
  before the first trains, with nothing recorded; `dry_run=true` prints the plan and stops there;
- it marks runs left RUNNING by dead processes as KILLED, creates the sweep's parent run and hands its
  id to the jobs through the environment (inherited by joblib workers too);
- each job writes its outcome (finished / skipped / failed) as a tag on the parent run, the ledger;
- on end, it prints the ledger's summary and exits non-zero if any job failed.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from harness import tracking
from harness.errors import HarnessError

log = logging.getLogger(__name__)

LEDGER_PREFIX = "job."
OUTCOMES = ("finished", "skipped", "failed")


def job_overrides(config: DictConfig) -> list[list[str]]:
    """The override list of every job, in launch order, as Hydra's BasicSweeper expands them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(arguments)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def job_configs(config: DictConfig) -> list[tuple[list[str], DictConfig]]:
    """Each job's overrides with its fully composed config (Hydra's own sweep-config loader)."""
    loader = GlobalHydra.instance().config_loader()
    return [(overrides, loader.load_sweep_config(config, overrides)) for overrides in job_overrides(config)]


def check_jobs(jobs: list[tuple[list[str], DictConfig]], check: Callable[[DictConfig], Any]) -> list[str]:
    """Problems of every job, each prefixed with the job's overrides; empty when all can run."""
    out = []
    for overrides, cfg in jobs:
        try:
            check(cfg)
        except HarnessError as exc:
            out.append(f"job [{' '.join(overrides)}]: {exc}")
    return out


def record(outcome: str, detail: str = "") -> None:
    """Write this job's outcome to the sweep ledger (a tag on the parent run); no-op outside a sweep."""
    import mlflow
    from hydra.core.hydra_config import HydraConfig

    parent = os.environ.get(tracking.PARENT_RUN_ENV)
    if parent is None:
        return
    num = HydraConfig.get().job.num
    mlflow.MlflowClient().set_tag(parent, f"{LEDGER_PREFIX}{num}", f"{outcome} {detail}".strip()[:4000])


def ledger(run_id: str) -> dict[str, list[str]]:
    """The outcomes written by the jobs of a sweep, grouped: {'finished': [...], 'skipped': [...], ...}."""
    import mlflow

    tags = mlflow.MlflowClient().get_run(run_id).data.tags
    out: dict[str, list[str]] = {k: [] for k in OUTCOMES}
    for key, value in sorted(tags.items()):
        if key.startswith(LEDGER_PREFIX):
            outcome, _, detail = value.partition(" ")
            out.setdefault(outcome, []).append(f"{key}: {detail}")
    return out


class SweepCallback(Callback):
    """Hydra callback around a multirun (see the module docstring)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra turns a callback's exception into a warning and launches the jobs anyway: stop here instead.
        try:
            self._start(config)
        except Exception:
            log.exception("sweep: could not start")
            sys.exit(1)

    def _start(self, config: DictConfig) -> None:
        import mlflow

        from harness import job
        from harness.paths import register_resolvers

        register_resolvers()
        jobs = job_configs(config)
        problems = check_jobs(jobs, job.check)
        if problems:
            log.error(
                "sweep: %d of %d job(s) cannot run; nothing was started:\n%s",
                len(problems),
                len(jobs),
                "\n".join(problems),
            )
            sys.exit(2)
        log.info("sweep: %d job(s), all inputs checked", len(jobs))
        if config.get("dry_run"):
            job.print_plan(jobs)
            sys.exit(0)
        try:
            uri = tracking.connect(config.get("tracking_uri"))
            experiment_id = tracking.ensure_experiment(str(config.study), uri)
        except HarnessError as exc:
            log.error("%s", exc)
            sys.exit(2)
        tracking.reap_dead_runs(experiment_id)
        overrides = " ".join(OmegaConf.to_container(config.hydra.overrides.task))
        run = mlflow.MlflowClient().create_run(
            experiment_id,
            run_name=f"sweep {overrides}"[:250],
            tags={
                "run_kind": "sweep",
                "sweep_overrides": overrides,
                "n_jobs": str(len(jobs)),
                "git_commit": tracking.git_commit(),
                **tracking.process_tags(),
            },
        )
        os.environ[tracking.PARENT_RUN_ENV] = run.info.run_id
        log.info("sweep: MLflow parent run %s in study %r (%s)", run.info.run_id, config.study, uri)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        import mlflow

        run_id = os.environ.pop(tracking.PARENT_RUN_ENV, None)
        if run_id is None:
            return
        outcomes = ledger(run_id)
        failed = outcomes["failed"]
        mlflow.MlflowClient().set_terminated(run_id, "FAILED" if failed else "FINISHED")
        log.info(
            "sweep summary: %d finished, %d skipped (already FINISHED in the study), %d failed",
            len(outcomes["finished"]),
            len(outcomes["skipped"]),
            len(failed),
        )
        for line in failed:
            log.error("sweep: failed %s", line)
        if failed:
            sys.exit(1)
