"""`+sweep=lr_optuna`: hydra-optuna-sweeper with an in-memory study minimises the final eval loss the jobs return;
its trials are the children of one parent run, and the best value it reports is the lowest child eval loss."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from sweep_runner import run_sweep

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")


def test_optuna_trials_are_children_and_the_best_is_the_lowest_eval_loss(tmp_path: Path):
    run_sweep("gdn.train", ["-m", "+sweep=lr_optuna", "hydra.sweeper.n_trials=2"], tmp_path)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("lr_optuna").experiment_id
    parent = client.search_runs([experiment_id], "tags.sweep_role = 'parent'")[0]
    assert parent.data.tags["sweeper"] == "OptunaSweeper" and parent.info.status == "FINISHED"
    children = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 2
    lrs = [float(c.data.params["optim.optimizer.lr"]) for c in children]
    assert all(1e-4 <= lr <= 3e-2 for lr in lrs) and lrs[0] != lrs[1]

    results = yaml.safe_load((Path(parent.data.tags["sweep_dir"]) / "optimization_results.yaml").read_text())
    best = min(children, key=lambda c: c.data.metrics["eval/loss"])
    assert results["best_value"] == pytest.approx(best.data.metrics["eval/loss"], rel=1e-6)
    assert results["best_params"]["optim.optimizer.lr"] == pytest.approx(float(best.data.params["optim.optimizer.lr"]))
