"""Experiments are model-training experiments in a real MLflow store (sqlite)."""
from pathlib import Path

from mlflow.tracking import MlflowClient

from gdn.dashboard.experiments import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND, runs_page_url, training_experiment_id


def test_a_new_experiment_and_one_without_a_chosen_kind_become_model_training(tmp_path: Path):
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    new = training_experiment_id(client, "fresh")
    assert client.get_experiment(new).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    assert training_experiment_id(client, "fresh") == new

    old = client.create_experiment("made_before")  # by an older gdn, or by hand: no kind
    inferred = client.create_experiment("inferred", tags={EXPERIMENT_KIND_TAG: "genai_development_inferred"})
    chosen = client.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    for name, experiment_id, kind in [("made_before", old, MODEL_TRAINING_KIND), ("inferred", inferred,
                                      MODEL_TRAINING_KIND), ("chosen", chosen, "genai_development")]:
        assert training_experiment_id(client, name) == experiment_id
        assert client.get_experiment(experiment_id).tags[EXPERIMENT_KIND_TAG] == kind, name  # a choice is kept


def test_the_runs_page_address():
    assert runs_page_url("http://host:5000/", "7") == \
        "http://host:5000/#/experiments/7/runs?workflowType=machine_learning"
    assert runs_page_url("sqlite:////o/mlflow.db", "7").startswith("http://127.0.0.1:5000/#/experiments/7/runs?")
