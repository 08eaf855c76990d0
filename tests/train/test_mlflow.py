"""A real MLflow store (sqlite by default, and a real `mlflow server` on 127.0.0.1) receives the whole run."""
from pathlib import Path

from mlflow.tracking import MlflowClient

from gdn.train.main import run


def read_run(uri: str, run_id: str):
    client = MlflowClient(tracking_uri=uri)
    return client, client.get_run(run_id)


def assert_complete_run(client: MlflowClient, logged, steps: int):
    assert logged.info.status == "FINISHED"
    params, tags = logged.data.params, logged.data.tags
    assert params["model.d_model"] == "32" and int(params["num_parameters"]) > 0
    assert len(tags["git_sha"]) == 40 and tags["git_dirty"] in ("True", "False")
    assert tags["model"] == "custom" or tags["model"]
    loss_history = client.get_metric_history(logged.info.run_id, "train/loss")
    assert [m.step for m in loss_history] == list(range(2, steps + 1, 2))
    for key in ("eval/loss", "eval/accuracy", "train/lr", "train/grad_norm", "train/tokens_per_s",
                "train/tokens_seen", "system/peak_memory_gib"):
        assert key in logged.data.metrics, key
    artifacts = {a.path for a in client.list_artifacts(logged.info.run_id, "config")}
    assert artifacts == {"config/resolved.yaml", "config/overrides.txt"}


def test_default_store_is_an_sqlite_file_under_the_output_root(compose_config, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    overrides = ["optim.optimizer.lr=0.002"]
    run(compose_config("logging=mlflow", *overrides), tmp_path / "run", overrides, {"model": "gdn"})  # as Hydra calls
    out = capsys.readouterr().out
    run_id = out.split("MLflow run id ")[1].split()[0]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert (tmp_path / "mlflow.db").is_file() and uri in out
    client, logged = read_run(uri, run_id)
    assert_complete_run(client, logged, steps=8)
    assert logged.info.run_name == "gdn lr=0.002"  # named after its architecture and overrides
    assert client.get_experiment(logged.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"


def test_resumed_run_continues_the_same_mlflow_run(compose_config, tmp_path: Path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run(compose_config("logging=mlflow", "trainer.stop_after_steps=4"), tmp_path / "run")
    run(compose_config("logging=mlflow", "trainer.resume=auto"), tmp_path / "run", ["trainer.log_every=2"])
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("gdn").experiment_id])
    assert len(runs) == 1
    assert runs[0].info.run_name == "custom"  # a resumed run keeps its name
    client, logged = read_run(uri, runs[0].info.run_id)
    assert_complete_run(client, logged, steps=8)


def test_runs_reach_a_real_tracking_server_through_the_env_var(compose_config, tmp_path: Path, mlflow_server,
                                                               monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    run(compose_config("logging=mlflow"), tmp_path / "run")
    run_id = capsys.readouterr().out.split("MLflow run id ")[1].split()[0]
    client, logged = read_run(mlflow_server, run_id)
    assert_complete_run(client, logged, steps=8)
    assert not (tmp_path / "mlflow.db").exists()
