"""Read the runs of a sweep or an experiment back from MLflow (search_runs + metric histories).

A target is a parent run id (its children are the runs) or an experiment name (every run in it except the sweeps'
parent runs; the report then goes to the newest parent run). Each run becomes a RunRecord holding what the report
needs: tags, params, the latest value of every metric, and the loss / tokens / throughput histories.
"""
from __future__ import annotations

from dataclasses import dataclass, field

HISTORY_KEYS = ("train/loss", "train/tokens_seen", "train/tokens_per_s")
PARENT_TAG = "sweep_role"


def is_mfu(key: str) -> bool:
    return key.rsplit("/", 1)[-1].lower() == "mfu"


@dataclass
class RunRecord:
    run_id: str
    status: str
    start_time: int
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]                          # latest value of each metric
    histories: dict[str, dict[int, float]] = field(default_factory=dict)  # key -> {step: value}

    @property
    def architecture(self) -> str:
        return self.tags.get("architecture") or self.tags.get("model", "custom")

    def overrides(self) -> dict[str, str]:
        """The job's Hydra overrides as {key: value} (from the `overrides` tag, one space between overrides)."""
        pairs = (item.partition("=") for item in self.tags.get("overrides", "").split())
        return {key: value for key, sep, value in pairs if sep}


@dataclass
class RunSet:
    title: str                  # what was asked for: the sweep id or the experiment name
    experiment_id: str
    parent_run_id: str | None   # where the report's artifacts go (None: an experiment without any sweep)
    runs: list[RunRecord]
    whole_experiment: bool = False  # the target was an experiment (runs of all its sweeps), not one sweep


def _is_run_id(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def _records(client, runs) -> list[RunRecord]:
    """RunRecords with their histories, in the order the runs started."""
    records = []
    for run in runs:
        record = RunRecord(run.info.run_id, run.info.status, run.info.start_time, dict(run.data.tags),
                           dict(run.data.params), dict(run.data.metrics))
        for key in (*HISTORY_KEYS, *(k for k in record.metrics if is_mfu(k))):
            if key in record.metrics:
                record.histories[key] = {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
        records.append(record)
    return sorted(records, key=lambda r: (r.start_time, r.run_id))


def collect_runs(client, target: str) -> RunSet:
    """The runs of `target` (a parent run id or an experiment name); a clear error when it is neither."""
    from mlflow.exceptions import MlflowException

    if _is_run_id(target):
        try:
            parent = client.get_run(target)
        except MlflowException:
            parent = None
        if parent is not None:
            experiment_id = parent.info.experiment_id
            runs = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{target}'", max_results=10000)
            return RunSet(parent.data.tags.get("sweep_id", target), experiment_id, target, _records(client, runs))
    experiment = client.get_experiment_by_name(target)
    if experiment is None:
        names = sorted(e.name for e in client.search_experiments())
        raise ValueError(f"{target!r} is neither a run id nor an experiment in this MLflow store; experiments: "
                         f"{', '.join(names) or 'none'} (set --tracking-uri or MLFLOW_TRACKING_URI for another store)")
    all_runs = client.search_runs([experiment.experiment_id], max_results=10000,
                                  order_by=["attributes.start_time DESC"])
    parents = [r for r in all_runs if r.data.tags.get(PARENT_TAG) == "parent"]
    runs = _records(client, [r for r in all_runs if r.data.tags.get(PARENT_TAG) != "parent"])
    return RunSet(target, experiment.experiment_id, parents[0].info.run_id if parents else None, runs,
                  whole_experiment=True)
