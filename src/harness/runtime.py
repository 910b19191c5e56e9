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
    """The job's share of the cores: divided among the jobs Hydra's joblib launcher runs at once; the
    cores a cluster scheduler granted (Ray sets OMP_NUM_THREADS to a task's num_cpus, SLURM sets
    SLURM_CPUS_PER_TASK); None (all) otherwise."""
    from hydra.core.hydra_config import HydraConfig

    n_jobs = HydraConfig.get().launcher.get("n_jobs") if HydraConfig.initialized() else None
    if n_jobs and n_jobs != 1:
        parallel = os.cpu_count() if n_jobs < 0 else n_jobs
        return max(1, (os.cpu_count() or 1) // parallel)
    for granted in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
        if os.environ.get(granted, "").isdigit() and int(os.environ[granted]) > 0:
            return int(os.environ[granted])
    return None
