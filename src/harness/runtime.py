"""TensorFlow's set-up for one job: deterministic ops, the precision policy, the job's share of the cores."""

from __future__ import annotations

import logging
import os
import sys

from omegaconf import DictConfig


def quiet_tensorflow() -> None:
    """Import TensorFlow and initialise its devices with the process's C++ stderr muted.

    At import and device set-up TensorFlow logs through absl before its log level applies
    (TF_CPP_MIN_LOG_LEVEL is ignored there: "All log messages before absl::InitializeLog()", "Could not
    find cuda drivers", "failed call to cuInit" on a machine without a GPU). These say nothing about the
    study, so the console shows only the harness's lines; HARNESS_TF_LOGS=1 shows them. Python errors
    of the import are raised as usual.
    """
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # what TensorFlow logs later: errors only
    if os.environ.get("HARNESS_TF_LOGS"):
        import tensorflow  # noqa: F401

        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    logging.getLogger("tensorflow").addFilter(_not_model_count_tracing)


def _not_model_count_tracing(record: logging.LogRecord) -> bool:
    """Drop TensorFlow's "N out of the last M calls ... triggered tf.function retracing" warning.

    TensorFlow counts traces per Python code object, and every Keras model's train/test/predict step
    shares one (`TensorFlowTrainer._make_function.<locals>.multi_step_on_iterator`): each new model's
    first trace counts as a retrace of the last model's. A job builds several models (feature extractor,
    head, fine-tuned model) and a sweep runs several jobs per process, so on small data the warning
    fires although no function is traced twice for the same model (the datasets have an unknown batch
    dimension, so a short last batch reuses the trace); tensorflow/tensorflow#42441 reports the same.
    """
    return "triggered tf.function retracing" not in record.getMessage()


def configure_runtime(cfg: DictConfig) -> int | None:
    """Deterministic ops (same config + seed = same numbers on CPU) and the job's thread budget."""
    import keras
    import tensorflow as tf

    from harness.config import PRECISIONS

    tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(PRECISIONS[cfg.precision])
    threads = cfg.threads or default_threads()
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
