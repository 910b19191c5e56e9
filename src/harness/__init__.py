"""harness: scratch vs frozen vs fine-tuned transfer-learning studies, swept with Hydra, tracked in MLflow."""

import os

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) drowns the per-epoch progress lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

from harness.config import schema  # noqa: E402, F401 - registers the config schema in Hydra's ConfigStore
