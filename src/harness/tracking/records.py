"""What the active run records while a job trains: per-epoch metrics, datasets, final metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
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


# Epoch e is logged at step e - 1 (Keras' epoch index); the validation before the first epoch, epoch 0, at -1.
INITIAL_STEP = -1


def log_initial(values: Mapping[str, float]) -> None:
    """The validation metrics before the first epoch (epoch 0 of the curves) into the active run."""
    import mlflow

    mlflow.log_metrics(dict(values), step=INITIAL_STEP)


def log_history(
    history: Mapping[str, list[float]], first_epoch: int = 0, initial: Mapping[str, float] | None = None
) -> None:
    """Per-epoch metrics of a phase trained earlier (a reused head phase) into the active run, steps as then."""
    import mlflow
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [
        Metric(key, float(value), now, first_epoch + step)
        for key, values in history.items()
        for step, value in enumerate(values)
    ]
    metrics += [Metric(key, float(value), now, INITIAL_STEP) for key, value in (initial or {}).items()]
    active = mlflow.active_run()
    assert active is not None, "a phase's history is logged into its regime run"
    mlflow.MlflowClient().log_batch(active.info.run_id, metrics=metrics)


PREDICTIONS = "predictions/test.csv"


def log_predictions(root: Path, files: Sequence[Path], labels: Any, class_names: Sequence[str], scores: Any) -> None:
    """The regime's prediction for every test image, as the artifact predictions/test.csv: file (relative to the
    data folder), true class, predicted class, correct, and the scores (the probability of the second class for
    two classes, one score per class otherwise). The evidence for per-image tests, error analysis, ensembles."""
    import mlflow
    import numpy as np
    import pandas as pd

    scores = np.asarray(scores, dtype=float)
    if scores.ndim == 1:  # sigmoid: P(second class)
        predicted = (scores > 0.5).astype(int)
        columns = {f"p_{class_names[1]}": scores}
    else:
        predicted = scores.argmax(axis=1)
        columns = {f"p_{name}": scores[:, i] for i, name in enumerate(class_names)}
    labels = np.asarray(labels, dtype=int)
    table = pd.DataFrame(
        {
            "file": [str(Path(f).relative_to(root)) if Path(f).is_relative_to(root) else str(f) for f in files],
            "label": [class_names[i] for i in labels],
            "predicted": [class_names[i] for i in predicted],
            "correct": (predicted == labels).astype(int),
            **columns,
        }
    )
    mlflow.log_text(table.to_csv(index=False, float_format="%.6g"), PREDICTIONS)


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
        dataset = mlflow.data.from_pandas(  # type: ignore[attr-defined]
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
