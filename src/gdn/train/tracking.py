"""MLflow tracking of one run: params, tags, artifacts and metrics. Only rank 0 ever creates a tracker.

Default store: an sqlite file under the output root (MLflow >= 3.13 refuses the plain file store); overridden by
`logging.tracking_uri` or, when that is null, by $MLFLOW_TRACKING_URI.

Metrics are logged asynchronously (MLflow's background queue, `synchronous=False`): a training step never waits on
the store or the server; `finish` flushes the queue before the run is closed, so nothing is lost.
A job of a sweep is a child run: `parent_run_id` sets MLflow's `mlflow.parentRunId` tag (see gdn.sweep).
An experiment is created as a model-training experiment, so that MLflow's UI opens it on its runs (gdn.dashboard).
"""
from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gdn.dashboard.experiments import training_experiment_id

MAX_PARAMS_PER_BATCH = 100
MAX_PARAM_VALUE_LENGTH = 6000


def default_tracking_uri(output_root: str | Path) -> str:
    return f"sqlite:///{Path(output_root).resolve() / 'mlflow.db'}"


def resolve_tracking_uri(configured: str | None, output_root: str | Path) -> str:
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(output_root)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{"model": {"d_model": 128}} -> {"model.d_model": "128"}; lists stay one value."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:MAX_PARAM_VALUE_LENGTH]
    return flat


def git_state(repo: Path) -> dict[str, str]:
    """Commit SHA and whether the work tree differs from it; "unknown" outside a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return {"git_sha": git("rev-parse", "HEAD"), "git_dirty": str(bool(git("status", "--porcelain")))}
    except (OSError, subprocess.CalledProcessError):
        return {"git_sha": "unknown", "git_dirty": "unknown"}


def is_rank_zero() -> bool:
    """True outside a distributed launch and on global rank 0 (torchrun's RANK, else Slurm's SLURM_PROCID)."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0"))) == 0


def run_tags(choices: Mapping[str, str], seed: int, overrides: list[str]) -> dict[str, str]:
    """The tags a comparison groups and filters by: architecture (the model choice), scale, seed, overrides."""
    return {"architecture": choices.get("model") or "custom", "scale": choices.get("scale") or "none",
            "seed": str(seed), "overrides": " ".join(overrides)[:5000]}


class MlflowTracker:
    """One MLflow run; `run_id` given resumes that run (under its own name) instead of starting a new one.
    `experiment_id` (instead of the name) and `parent_run_id` place a sweep's job under its parent run."""

    def __init__(self, tracking_uri: str, experiment_name: str, run_name: str | None = None,
                 run_id: str | None = None, tags: Mapping[str, str] | None = None,
                 parent_run_id: str | None = None, experiment_id: str | None = None):
        import mlflow  # imported here: the kernels and models never need it

        self._mlflow = mlflow
        mlflow.set_tracking_uri(tracking_uri)
        self.tracking_uri = tracking_uri
        if run_id is None and experiment_id is None:
            experiment_id = training_experiment_id(mlflow.MlflowClient(tracking_uri), experiment_name)
        self.run = mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name, tags=dict(tags or {}),
                                    experiment_id=None if run_id else experiment_id,
                                    parent_run_id=None if run_id else parent_run_id)
        self.run_id = self.run.info.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [(k, str(v)) for k, v in params.items()]
        existing = self._mlflow.get_run(self.run_id).data.params
        items = [(k, v) for k, v in items if k not in existing]  # a resumed run keeps its params
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self._mlflow.log_params(dict(items[i : i + MAX_PARAMS_PER_BATCH]))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step, synchronous=False)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._mlflow.log_artifact(str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._mlflow.log_text(text, artifact_file)

    def set_tag(self, key: str, value: str) -> None:
        self._mlflow.set_tag(key, value)

    def finish(self, status: str = "FINISHED") -> None:
        self._mlflow.flush_async_logging()  # end_run only hands the queue over; wait until every metric is stored
        self._mlflow.end_run(status=status)


class NullTracker:
    """Stands in when tracking is off (logging=none) or on ranks other than 0."""

    run_id = None
    tracking_uri = None

    def log_params(self, params): ...
    def log_metrics(self, metrics, step): ...
    def log_artifact(self, path, artifact_path=None): ...
    def log_text(self, text, artifact_file): ...
    def set_tag(self, key, value): ...
    def finish(self, status="FINISHED"): ...
