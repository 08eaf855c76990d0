"""A sweep job that raised: make sure the parent shows it as a FAILED child, with the error, and let the sweep go on.

The job's run may not exist (the error came before training started, e.g. a model that cannot be built) or may
already be closed as FAILED by the trainer; either way one FAILED child holding `error.txt` is left for this job.
"""
from __future__ import annotations

import sys
import traceback
from pathlib import Path

from omegaconf import DictConfig

from gdn.sweep.parent import SweepParent, current_sweep_parent
from gdn.train.tracking import is_rank_zero, run_tags


def fail_sweep_job(cfg: DictConfig) -> None:
    """Called from the job's `except` block: print the error, record it in MLflow, return no objective: the Optuna
    sweeper then marks the trial FAIL and goes on (NaN would make optuna 2.x raise), the basic sweeper ignores it."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    error_text = traceback.format_exc()
    print(f"error: sweep job `{' '.join(overrides)}` failed:\n{error_text}", file=sys.stderr)
    if cfg.logging.enabled:
        record_failed_job(current_sweep_parent(), Path(hydra_cfg.runtime.output_dir), dict(hydra_cfg.runtime.choices),
                          cfg.seed, overrides, error_text)
    return None


def record_failed_job(parent: SweepParent | None, run_dir: Path, choices: dict[str, str], seed: int,
                      overrides: list[str], error_text: str) -> str | None:
    """The FAILED child's run id (None without a parent or off rank 0). Runs are matched by their `run_dir` tag."""
    if parent is None or not is_rank_zero():
        return None
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=parent.tracking_uri)
    found = client.search_runs([parent.experiment_id],
                               f"tags.`mlflow.parentRunId` = '{parent.run_id}' and tags.run_dir = '{run_dir}'")
    if found:
        run_id = found[0].info.run_id
    else:
        tags = {**run_tags(choices, seed, overrides), **parent.child_tags(), "run_dir": str(run_dir),
                "mlflow.parentRunId": parent.run_id}
        name = parent.child_run_name(tags["architecture"], overrides)
        run_id = client.create_run(parent.experiment_id, run_name=name, tags=tags).info.run_id
    client.log_text(run_id, error_text, "error.txt")
    client.set_terminated(run_id, "FAILED")
    return run_id
