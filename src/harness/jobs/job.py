"""One job of a study: its inputs checked, then the requested regimes trained inside MLflow runs.

Order matters: every check that can fail on user input (config, data folder, weights file, store)
runs before the first MLflow run is opened or any image is decoded, so bad input leaves nothing behind.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness import tracking
from harness.config import Config
from harness.errors import LostLease
from harness.jobs import cache, claims, leases, plan
from harness.jobs.features import cache_keys, cached_features, load_arrays
from harness.jobs.inputs import Prepared, fetch, needs_pretrained, prepare
from harness.tracking import results as results_record
from harness.training import backbones, specs, stopping
from harness.training.regime import Context, Recipe, RegimeSpec
from harness.training.runtime import configure_runtime, quiet_tensorflow, resolve_precision

if TYPE_CHECKING:  # Keras is imported only once a job is past its checks: bad input fails fast
    from harness.training.trainer import RegimeResult

log = logging.getLogger(__name__)


@contextmanager
def regime_run(cfg: Config, job_identity: str, regime: str) -> Iterator[None]:
    """A regime's MLflow run, nested in the job's, kept alive by the heartbeat while it trains."""
    with tracking.regime_run(cfg, job_identity, regime) as run, leases.heartbeat.held(run.info.run_id, cfg.heartbeat_s):
        yield


@dataclass(frozen=True)
class Elsewhere:
    """A job not run because another process holds a live claim on its identity."""

    holder: str


@dataclass(frozen=True)
class Skipped:
    """A job not run because the study already has a FINISHED run of the same identity."""

    run_id: str


def run(cfg: Config, overrides: list[str], name: str) -> dict[str, RegimeResult] | Skipped | Elsewhere:
    """Run one job end to end; returns the results by regime, or Skipped naming the run that has them."""
    job = prepare(cfg)  # bad config or data: an error in a second or two, before TensorFlow is imported
    fetch(cfg)  # then the downloads (ImageNet weights): a clear error offline, not a traceback in the job
    quiet_tensorflow()
    import keras

    threads = configure_runtime(cfg.precision, cfg.backbone.name, cfg.threads)  # before the first model is built
    pretrained = None
    if needs_pretrained(cfg):  # a weights file that does not fit fails here, before the store is touched
        keras.utils.set_random_seed(cfg.seed)  # weights=null: the "pretrained" init follows the seed
        pretrained = backbones.pretrained(cfg.backbone.name, cfg.backbone.weights, cfg.backbone.image_size)
    plan.check_disk(job)  # as a sweep's pre-check does for each of its jobs (cut shapes from the build above)
    uri = tracking.connect(cfg.tracking_uri)
    experiment_id = tracking.ensure_experiment(str(cfg.study), uri)
    if cfg.sweep_run is None:
        leases.reap(experiment_id, cfg.lease_s)  # a sweep did it once for all its jobs
    outcome = claim(cfg, job.identity, name, experiment_id)
    if isinstance(outcome, claims.Held):
        log.info(
            "skip: job %s is running elsewhere (run %s holds it in study %r)", job.identity, outcome.holder, cfg.study
        )
        return Elsewhere(outcome.holder)
    if isinstance(outcome, claims.Done):
        done = outcome.finished
        other_code = done.code != tracking.package_digest()
        log.info(
            "skip: job %s already FINISHED as run %s%s (force=true re-runs it)",
            job.identity,
            done.run_id,
            f", recorded with other code (commit {done.commit})" if other_code else "",
        )
        return Skipped(done.run_id)
    run_id = outcome.run_id
    try:
        # everything after the claim happens inside the job run: an error there ends it FAILED, never leaves
        # a RUNNING claim that the heartbeat would keep alive
        with tracking.job_run(cfg, run_id, overrides):
            results = train(cfg, job, threads, pretrained)
            leases.confirm(run_id)  # the claim is still ours: the run may be marked FINISHED
    except Exception:
        tracking.end_if_running(run_id, "FAILED")  # the run could not even be opened
        raise
    except KeyboardInterrupt:
        tracking.end_if_running(run_id, "KILLED")  # Ctrl-C before its run opened: not left for the reaper
        raise
    finally:
        leases.heartbeat.release(run_id)
    reason = leases.lost_reason_after_finish(run_id)
    if reason is not None:  # reaped between the last check and FINISHED: the reaper's mark voids that status
        raise LostLease(run_id, reason)
    return results


def claim(cfg: Config, job_identity: str, name: str, experiment_id: str) -> claims.Claimed | claims.Done | claims.Held:
    """The claim on the job's identity; with wait_for_others=true, a job held elsewhere waits for its holder to end
    (then it is done, or the holder died and this process claims it)."""

    def create() -> str:
        return tracking.create_job_run(cfg, job_identity, name, experiment_id, claims.initial_tags(cfg.lease_s))

    while True:
        outcome = claims.claim(experiment_id, job_identity, create, cfg.lease_s, cfg.heartbeat_s, bool(cfg.force))
        if not (isinstance(outcome, claims.Held) and cfg.wait_for_others):
            return outcome
        log.info("wait: job %s is running elsewhere (run %s); waiting for it (wait_for_others=true)", job_identity,
                 outcome.holder)  # fmt: skip
        claims.wait_for(outcome.holder, cfg.lease_s, poll_s=min(float(cfg.heartbeat_s), 10.0))


def train(cfg: Config, job: Prepared, threads: int | None, pretrained) -> dict[str, RegimeResult]:
    """The regimes of a claimed job, in the registry's order, inside its (active) job run."""
    from harness.training import augmentation
    from harness.training.trainer import Trainer

    # arrays not stored (cache=false, preprocessed pixels) go to unlinked files in $TMPDIR: disk, not memory
    store = cache.ArrayCache(cfg.cache_dir if cfg.cache else None, spill=tempfile.gettempdir())
    keys = cache_keys(job)
    trainer = Trainer(
        num_classes=job.folder.num_classes,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        optimizer=cfg.optimizer,
        augment=augmentation.from_settings(cfg.augmentation, cfg.seed) if cfg.augment else None,
        callbacks=lambda regime, first: [tracking.epoch_logger(), leases.guard()],
        features=cached_features(store, keys, cfg, pretrained),
        rule=stopping.Rule.from_cfg(cfg),
        on_initial=lambda regime, values: tracking.log_initial(values),
    )
    results: dict[str, RegimeResult] = {}
    tracking.log_params({f"data.{k}": v for k, v in job.summary().items()})
    tracking.log_datasets(job.folder.root, job.splits, list(job.folder.class_names), job.split_identities())
    used = resolve_precision(cfg.precision, cfg.backbone.name)  # auto: what this machine trains in
    precision = {"precision": str(cfg.precision), "precision_used": used}
    tracking.set_tags({"threads": str(threads or "all"), **precision})
    with results_record.cache_use(store.stats, store.enabled):
        arrays = load_arrays(job, store, keys)
    ctx = Context(Recipe.from_cfg(cfg), arrays, trainer, pristine(pretrained) if pretrained is not None else None)
    for spec in specs.chosen(cfg.regimes):
        ctx.start = results[spec.starts_from].state if spec.starts_from else None
        with regime_run(cfg, job.identity, spec.name), results_record.cache_use(store.stats, store.enabled):
            result = results[spec.name] = train_regime(spec, ctx, store, keys.states.get(spec.name))
            title = f"{cfg.backbone.name} {spec.name} (unfreeze_at={cfg.unfreeze_at})"
            before = results[spec.starts_from] if spec.starts_from else None
            if before is None:
                results_record.log_regime(result, title, job.test_images())
            else:  # drawn after the phase it continues, as in the TensorFlow tutorial's plots
                results_record.log_regime(result, title, job.test_images(), result.first_epoch, before.history)
    tracking.log_result_metrics({f"{r}_{k}": v for r, res in results.items() for k, v in (res.test or {}).items()})
    tracking.log_result_metrics(store.stats.as_metrics())
    tracking.log_result_metrics({OBJECTIVE: objective(results)})
    return results


def train_regime(spec: RegimeSpec, ctx: Context, store: cache.ArrayCache, key: str | None) -> RegimeResult:
    """One regime in its (active) run: trained, or its stored state reused from the cache when the spec allows
    (`reuse`; tags `<kind>_phase` reused | trained and `<kind>_phase_key`)."""
    if spec.reuse is None or key is None:
        return spec.train(ctx)
    reuse = spec.reuse
    restored = store.load_bundle(key, lambda folder: reuse.restore(ctx, folder))
    if restored is not None:
        tracking.log_history(restored.history, initial=restored.initial)
        log.info("%-8s %s phase reused from the cache (%s)", spec.name, reuse.kind, key)
        result = restored
    else:
        result = spec.train(ctx)
        store.store_bundle(key, lambda folder: reuse.save(result, folder))
    tracking.set_tags({f"{reuse.kind}_phase": "reused" if restored else "trained", f"{reuse.kind}_phase_key": key})
    return result


def pristine(base):
    """The pretrained backbone as a regime needs it: its weights as loaded (BatchNorm statistics included) and every
    layer trainable, whatever a regime before it in the job trained."""
    from harness.training import backbones

    weights = base.get_weights()

    def fresh():
        base.set_weights(weights)
        backbones.set_trainable(base, True)
        return base

    return fresh


# What a search sweeper (Optuna's, say) maximises: validation, never test accuracy, steers a search.
OBJECTIVE = "best_val_acc"


def objective(results: dict[str, RegimeResult]) -> float:
    """The best validation accuracy of the job's last regime (fine-tuned, else frozen, else scratch)."""
    last = next(results[r] for r in reversed(specs.NAMES) if r in results)  # the registry's order
    return float(max(last.history["val_acc"]))
