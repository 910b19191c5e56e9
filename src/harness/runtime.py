"""TensorFlow's set-up for one job: deterministic ops, the precision policy, the job's share of the cores."""

from __future__ import annotations

import os

from omegaconf import DictConfig


def configure_runtime(cfg: DictConfig) -> int | None:
    """Deterministic ops (same config + seed = same numbers on CPU) and the job's thread budget."""
    import keras
    import tensorflow as tf

    from harness.config import PRECISIONS

    tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(PRECISIONS[cfg.get("precision", "fp32")])
    threads = cfg.get("threads") or default_threads()
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
            tf.config.threading.set_inter_op_parallelism_threads(int(threads))
        except RuntimeError:
            pass  # already initialised by an earlier job in this process: the first setting stands
    return threads


def default_threads() -> int | None:
    """Cores divided among the jobs Hydra's joblib launcher runs at once; None (all) otherwise."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    n_jobs = HydraConfig.get().launcher.get("n_jobs")
    if not n_jobs or n_jobs == 1:
        return None
    parallel = os.cpu_count() if n_jobs < 0 else n_jobs
    return max(1, (os.cpu_count() or 1) // parallel)
