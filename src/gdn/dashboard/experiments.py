"""Experiments as model-training experiments, and the address of their runs page.

MLflow 3's UI reads the experiment tag `mlflow.experimentKind`: an experiment of kind `custom_model_development`
opens on its runs, one without it (or with a kind the UI only inferred) may open on the GenAI traces overview.
Since MLflow 3.17 the UI takes the kind from its own GenAI / Model training switch instead (the address's
`workflowType`, else the browser's last choice, GenAI at first), so the runs page's address says `machine_learning`.
"""
from __future__ import annotations

from pathlib import Path

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
INFERRED_KINDS = ("", "no_inferred_type")  # the UI's own guesses, besides the `*_inferred` kinds
LOCAL_UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves a local store


def needs_kind(tags: dict[str, str]) -> bool:
    """True when the experiment has no kind that someone chose (none, or one the UI inferred)."""
    kind = tags.get(EXPERIMENT_KIND_TAG)
    return kind is None or kind in INFERRED_KINDS or kind.endswith("_inferred")


def local_artifact_location(tracking_uri: str) -> str | None:
    """Beside an sqlite store, `mlartifacts/` next to its file; None (the store's default) elsewhere. MLflow's own
    default for a local store is ./mlruns of whatever folder the command ran in."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    return (Path(tracking_uri[len(prefix):]).parent / "mlartifacts").as_uri()


def training_experiment_id(client, name: str) -> str:
    """The id of the experiment `name` (an MlflowClient's store), created if missing, as a model-training
    experiment (its artifacts beside an sqlite store); an existing one without a chosen kind gets the tag."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location=local_artifact_location(client.tracking_uri),
                                            tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})
        except MlflowException as error:  # another process (a parallel job) created it first
            if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
            experiment = client.get_experiment_by_name(name)
    if needs_kind(experiment.tags):
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    return experiment.experiment_id


def runs_page_url(tracking_uri: str, experiment_id: str) -> str:
    """The UI's runs table of the experiment: on the tracking server itself, or on `mlflow ui` for a local store."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else LOCAL_UI
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
