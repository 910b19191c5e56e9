"""The end of a sweep on the console: the results table read back from a real store, the browse hint."""

from __future__ import annotations

import mlflow

from harness.sweep import console


def test_swept_keys_are_those_that_vary_in_command_line_order():
    jobs = [["lr=0.1", "seed=0", "study=s", "sweep_run=a"], ["lr=0.1", "seed=1", "study=s", "sweep_run=a"],
            ["lr=0.2", "seed=0", "study=s", "sweep_run=a"]]  # fmt: skip
    assert console.swept_keys(jobs, ignore=["sweep_run"]) == ["lr", "seed"]


def test_results_table_has_one_row_per_job_and_a_column_per_regime(store):
    mlflow.set_tracking_uri(store)
    experiment = mlflow.create_experiment("console")
    client = mlflow.MlflowClient()
    jobs = []
    for seed, accuracies in ((1, {"frozen": 0.9, "finetune": 0.95}), (0, {"frozen": 0.8, "finetune": 0.85})):
        job = client.create_run(experiment, tags={"run_kind": "job"}).info.run_id
        client.log_param(job, "seed", str(seed))
        for regime, acc in accuracies.items():
            child = client.create_run(
                experiment, tags={"run_kind": "regime", "regime": regime, "mlflow.parentRunId": job}
            ).info.run_id
            client.log_metric(child, "test_acc", acc)
            client.log_metric(child, "train_time_s", 60.0)
        jobs.append(job)
    table = console.results_table(experiment, jobs, ["seed"])
    assert list(table.columns) == ["seed", "frozen test_acc", "finetune test_acc", "train min"]
    assert table.seed.tolist() == ["0", "1"]  # sorted by the swept keys
    assert table["finetune test_acc"].tolist() == [0.85, 0.95] and table["train min"].tolist() == ["2.0", "2.0"]


def test_browse_hint_gives_the_url_or_the_command_that_serves_it():
    served = console.browse_hint("http://trackhost:5000/", "7")
    assert served == "browse the runs: http://trackhost:5000/#/experiments/7?workflowType=machine_learning"
    local = console.browse_hint("sqlite:////data/mlruns/mlflow.db", "3")
    assert "mlflow ui --backend-store-uri sqlite:////data/mlruns/mlflow.db" in local
    assert "--default-artifact-root file:///data/mlruns/artifacts" in local
    assert "http://127.0.0.1:5000/#/experiments/3?workflowType=machine_learning" in local
