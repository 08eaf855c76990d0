"""`+sweep=lr_optuna`: hydra-optuna-sweeper (in-memory study) minimises the final eval loss the jobs return; its
trials are the children of one parent run, and a trial that fails is a FAILED child while the search goes on."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from sweep_runner import run_sweep

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")


def test_optuna_trials_are_children_a_failed_trial_does_not_stop_the_search(tmp_path: Path):
    # A choice instead of the sweep's log interval, so that one trial must fail: with the sweep's sampler seed 0 the
    # two random start-up trials take 0.001, then -1 (AdamW refuses a negative learning rate).
    run_sweep("gdn.train", ["-m", "+sweep=lr_optuna", "hydra.sweeper.n_trials=2",
                            "optim.optimizer.lr=choice(-1,0.001)"], tmp_path)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("lr_optuna").experiment_id
    parent = client.search_runs([experiment_id], "tags.sweep_role = 'parent'")[0]
    assert parent.data.tags["sweeper"] == "OptunaSweeper"
    assert (parent.data.tags["jobs_total"], parent.data.tags["jobs_failed"]) == ("2", "1")
    children = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    status = {c.data.tags["overrides"].split("optim.optimizer.lr=")[1].split()[0]: c for c in children}
    assert {lr: c.info.status for lr, c in status.items()} == {"0.001": "FINISHED", "-1": "FAILED"}

    results = yaml.safe_load((Path(parent.data.tags["sweep_dir"]) / "optimization_results.yaml").read_text())
    assert results["best_params"]["optim.optimizer.lr"] == 0.001
    assert results["best_value"] == pytest.approx(status["0.001"].data.metrics["eval/loss"], rel=1e-6)
