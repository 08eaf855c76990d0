"""The sweep callback talks to MLflow only from global rank 0 and only with tracking on (real Hydra composition)."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from gdn.config import CONF_DIR, register_resolvers
from gdn.sweep.callback import MlflowSweepCallback
from gdn.sweep.parent import SweepParent


def sweep_config(tmp_path: Path, *overrides: str, sweep: str | None = "baselines"):
    register_resolvers()
    named = [f"+sweep={sweep}"] if sweep else []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=[f"paths.output_root={tmp_path}", *named, *overrides],
                       return_hydra_config=True)


@pytest.mark.parametrize("rank_env, overrides", [
    ({"RANK": "1"}, []), ({"SLURM_PROCID": "3"}, []), ({}, ["logging=none"]),
])
def test_no_parent_run_off_rank_zero_or_without_tracking(tmp_path: Path, monkeypatch, rank_env, overrides):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for key, value in rank_env.items():
        monkeypatch.setenv(key, value)
    callback = MlflowSweepCallback()
    cfg = sweep_config(tmp_path, *overrides)
    callback.on_multirun_start(cfg)
    callback.on_multirun_end(cfg)
    assert callback.parent is None
    assert list(tmp_path.iterdir()) == []  # no MLflow store, no sweep folder, no parent record


def test_rank_zero_creates_the_parent_and_its_record(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    callback = MlflowSweepCallback()
    cfg = sweep_config(tmp_path)
    callback.on_multirun_start(cfg)
    record = Path(cfg.hydra.sweep.dir) / "mlflow_parent.json"
    assert callback.parent is not None and record.is_file()
    assert callback.parent.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert callback.parent.sweep_name == "baselines" and callback.parent.sweep_id.startswith("baselines-")
    assert SweepParent.read(record.parent) == callback.parent


@pytest.mark.parametrize("sweep, overrides, name_keys", [
    ("baselines", [], ("model",)),                          # seed "0" in the sweep file: one value
    ("baselines", ["hydra.sweeper.params.seed='0,1'"], ("model", "seed")),
    ("gdn_ablation", [], ("ablation",)),
    ("lr_optuna", [], ("optim.optimizer.lr",)),
])
def test_the_parent_is_named_after_the_sweep_and_knows_what_names_the_children(tmp_path: Path, monkeypatch, sweep,
                                                                               overrides, name_keys):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    callback = MlflowSweepCallback()
    callback.on_multirun_start(sweep_config(tmp_path, *overrides, sweep=sweep))
    assert callback.parent.name_keys == name_keys
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=callback.parent.tracking_uri)
    assert client.get_run(callback.parent.run_id).info.run_name.startswith(f"{sweep} 20")
    assert client.get_experiment(callback.parent.experiment_id).tags["mlflow.experimentKind"] == \
        "custom_model_development"


def test_a_multirun_without_a_named_sweep_is_a_parent_in_the_default_experiment(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    callback = MlflowSweepCallback()
    callback.on_multirun_start(sweep_config(tmp_path, sweep=None))
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=callback.parent.tracking_uri)
    assert client.get_experiment(callback.parent.experiment_id).name == "gdn"
    assert callback.parent.sweep_name == "multirun"
    assert client.get_run(callback.parent.run_id).data.tags["sweep_role"] == "parent"
