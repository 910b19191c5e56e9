"""TensorFlow's set-up for one job: deterministic ops, the precision policy, the job's share of the cores."""

from __future__ import annotations

import logging
import os
import sys

from harness.training import backbones

# Keras policy of each precision; auto is resolved per job to one of the others (resolve_precision)
PRECISIONS: dict[str, str | None] = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16", "auto": None}


def quiet_tensorflow() -> None:
    """Import TensorFlow and initialise its devices with the process's C++ stderr muted.

    At import and device set-up TensorFlow logs through absl before its log level applies
    (TF_CPP_MIN_LOG_LEVEL is ignored there: "All log messages before absl::InitializeLog()", "Could not
    find cuda drivers", "failed call to cuInit" on a machine without a GPU). These say nothing about the
    study, so the console shows only the harness's lines; HARNESS_TF_LOGS=1 shows them. Python errors
    of the import are raised as usual.
    """
    tf_logger = logging.getLogger("tensorflow")
    if _not_model_count_tracing not in tf_logger.filters:  # also when something else imported TensorFlow first
        tf_logger.addFilter(_not_model_count_tracing)
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


def _not_model_count_tracing(record: logging.LogRecord) -> bool:
    """Drop TensorFlow's "N out of the last M calls ... triggered tf.function retracing" warning.

    TensorFlow counts traces per Python code object, and every Keras model's train/test/predict step
    shares one (`TensorFlowTrainer._make_function.<locals>.multi_step_on_iterator`): each new model's
    first trace counts as a retrace of the last model's; so does each model's inference graph
    (`forward.graph_call.<locals>.<lambda>`). A job builds several models (feature extractor,
    head, fine-tuned model) and a sweep runs several jobs per process, so on small data the warning
    fires although no function is traced twice for the same model (the datasets have an unknown batch
    dimension, so a short last batch reuses the trace); tensorflow/tensorflow#42441 reports the same.
    """
    return "triggered tf.function retracing" not in record.getMessage()


NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # /proc/cpuinfo flags of native bf16 arithmetic


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is absent: not Linux)."""
    try:
        with open(cpuinfo) as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def visible_gpus() -> int:
    """How many GPUs TensorFlow sees (imports it, quietly)."""
    quiet_tensorflow()
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def resolve_precision(
    precision: str, backbone: str, flags: frozenset[str] | None = None, gpus: int | None = None
) -> str:
    """The precision a job trains in: `precision` itself, or for `auto` the one that is faster here.

    auto: fp16 where a GPU is visible; on a CPU bf16 only with native bf16 (AVX512-BF16 or AMX) and a backbone
    measured faster in it (its spec's bf16_faster_on_cpu), fp32 otherwise (emulated bf16 is slower than fp32).
    """
    if precision != "auto":
        return str(precision)
    if (visible_gpus() if gpus is None else gpus) > 0:
        return "fp16"
    native = NATIVE_BF16_FLAGS & (cpu_flags() if flags is None else flags)
    return "bf16" if native and backbones.get_spec(backbone).bf16_faster_on_cpu else "fp32"


def configure_runtime(precision: str, backbone: str, threads: int | None = None) -> int | None:
    """Deterministic ops (same config + seed = same numbers on CPU), the precision policy (`auto` resolved for
    `backbone`) and the job's thread budget (`threads`, else its share of the cores); returns the threads."""
    import keras
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(PRECISIONS[resolve_precision(precision, backbone)])
    threads = threads or default_threads()
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
        parallel = (os.cpu_count() or 1) if n_jobs < 0 else int(n_jobs)
        return max(1, (os.cpu_count() or 1) // parallel)
    for granted in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
        if os.environ.get(granted, "").isdigit() and int(os.environ[granted]) > 0:
            return int(os.environ[granted])
    return None
