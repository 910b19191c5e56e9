"""What the active run records while a job trains: per-epoch metrics, datasets, final metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger("harness.tracking")


def epoch_logger(after_epoch: Callable[[], None] | None = None) -> Any:
    """A Keras callback logging loss/acc/val_loss/val_acc per epoch to the active run (step = epoch), then
    calling `after_epoch` (the job's heartbeat)."""
    import keras
    import mlflow

    class MlflowEpochMetrics(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            metrics = {k: float(v) for k, v in (logs or {}).items() if k in ("loss", "acc", "val_loss", "val_acc")}
            mlflow.log_metrics(metrics, step=epoch)
            if after_epoch is not None:
                after_epoch()

    return MlflowEpochMetrics()


def log_history(history: Mapping[str, list[float]], first_epoch: int = 0) -> None:
    """Per-epoch metrics of a phase trained earlier (a reused head phase) into the active run, steps as then."""
    import time

    import mlflow
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [
        Metric(key, float(value), now, first_epoch + step)
        for key, values in history.items()
        for step, value in enumerate(values)
    ]
    mlflow.MlflowClient().log_batch(mlflow.active_run().info.run_id, metrics=metrics)


def log_datasets(root: Path, splits: Mapping[str, Any], class_names: list[str], identities: Mapping[str, str]) -> None:
    """Each split as an MLflow dataset input of the active run (the UI's Dataset column: name, digest,
    source, size) and the training files (path, class, sha256) as the artifact data/train_files.csv."""
    import warnings

    import mlflow
    import pandas as pd
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    with warnings.catch_warnings():
        # MLflow registers its local-artifact source twice (file and local schemes) and warns that a path
        # "can be interpreted in multiple ways" although both readings are the same class: resolved once here
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
        source = resolve_dataset_source(str(root))
    frames = {}
    for split, part in splits.items():
        frames[split] = pd.DataFrame(
            {
                "file": [
                    str(Path(f).relative_to(root)) if Path(f).is_relative_to(root) else str(f) for f in part.files
                ],
                "label": [class_names[i] for i in part.labels],
                "sha256": list(part.digests),
            }
        )
        dataset = mlflow.data.from_pandas(
            frames[split], source=source, targets="label", name=f"{root.name}/{split}", digest=identities[split][:16]
        )
        _log_input(dataset, split)
    if "train" in frames:
        mlflow.log_text(frames["train"].to_csv(index=False), "data/train_files.csv")


def _log_input(dataset: Any, split: str) -> None:
    """`mlflow.log_input`, once more when it loses a race: MLflow's SQL store looks a dataset up and then
    inserts it, so parallel jobs logging the same new split collide on the (experiment, name, digest) key;
    the retry finds the row the winner wrote and only links it to this run."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mlflow.log_input(dataset, context=split)
    except MlflowException:
        time.sleep(0.2)
        mlflow.log_input(dataset, context=split)


def log_result_metrics(values: Mapping[str, float]) -> None:
    """Final metrics of the active run."""
    import mlflow

    mlflow.log_metrics(dict(values))


def set_tags(tags: Mapping[str, str]) -> None:
    """Tags of the active run."""
    import mlflow

    mlflow.set_tags(dict(tags))


def log_params(params: Mapping[str, Any]) -> None:
    """Params of the active run."""
    import mlflow

    mlflow.log_params(dict(params))


def log_figure(fig: Any, name: str) -> None:
    """A matplotlib figure as an artifact of the active run."""
    import mlflow

    mlflow.log_figure(fig, name)


def log_keras_model(model: Any) -> None:
    """The trained model as an MLflow model of the active run (`log_model=true`)."""
    import mlflow

    mlflow.keras.log_model(model, name="model")
