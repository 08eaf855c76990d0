"""Evaluation metrics into MLflow: into the training run's own MLflow run when it has one (its status is left
as it is), else into a new run that names the evaluated run folder (in a model-training experiment, gdn.dashboard)."""
from __future__ import annotations

import re
import time
from collections.abc import Mapping

from gdn.dashboard.experiments import training_experiment_id

_NOT_ALLOWED = re.compile(r"[^\w\-./ ]")  # MLflow metric names: alphanumerics, _ - . / and spaces


def metric_name(name: str) -> str:
    """lm-eval's "acc,none" and the like -> "acc_none"."""
    return _NOT_ALLOWED.sub("_", name)


def log_eval_metrics(metrics: Mapping[str, float], *, tracking_uri: str, run_id: str | None, experiment_name: str,
                     step: int, tags: Mapping[str, str], run_name: str | None = None) -> str:
    """Log `metrics` at `step`; returns the run id they went to (`run_name` names a new run)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    client = MlflowClient(tracking_uri)
    created = run_id is None
    if created:
        experiment_id = training_experiment_id(client, experiment_name)
        run_id = client.create_run(experiment_id, run_name=run_name, tags=dict(tags)).info.run_id
    now = int(time.time() * 1000)
    batch = [Metric(metric_name(k), float(v), now, step) for k, v in metrics.items()]
    for i in range(0, len(batch), 500):  # MLflow's per-request limit is 1000 metrics
        client.log_batch(run_id, metrics=batch[i : i + 500])
    if not created:
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    else:
        client.set_terminated(run_id)
    return run_id
