"""What a run logs to a real MLflow store each interval: throughput, step time, data-wait share, memory, grad norm,
and MLflow's own system metrics when trainer.system_metrics is on."""
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from gdn.train.main import run


def test_interval_and_system_metrics_reach_mlflow(compose_config, tmp_path: Path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    try:
        run(compose_config("logging=mlflow", "trainer.system_metrics=true", "trainer.max_steps=30",
                           "trainer.log_every=10"), tmp_path / "run")
    finally:
        mlflow.disable_system_metrics_logging()  # the switch is process-wide
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    logged = client.search_runs([client.get_experiment_by_name("gdn").experiment_id])[0]
    metrics = logged.data.metrics
    for key in ("train/tokens_per_s", "train/tokens_per_s_per_device", "train/step_time_s", "train/data_wait_share",
                "train/grad_norm", "system/peak_memory_gib"):
        assert [m.step for m in client.get_metric_history(logged.info.run_id, key)] == [10, 20, 30], key
    assert metrics["train/tokens_per_s"] == metrics["train/tokens_per_s_per_device"]  # one process
    assert 0 <= metrics["train/data_wait_share"] < 1 and metrics["train/step_time_s"] > 0
    assert "train/mfu" not in metrics  # no MFU on the CPU
    assert "system/cpu_utilization_percentage" in metrics and "system/system_memory_usage_megabytes" in metrics
