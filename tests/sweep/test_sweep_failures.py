"""A sweep whose jobs fail in different places goes on to the end; each failed job is a FAILED child holding its
error, and the parent says how many failed (sqlite store under the output root, run through `gdn-sweep`)."""
from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from sweep_runner import run_sweep


def test_failed_jobs_are_failed_children_and_the_sweep_goes_on(tmp_path: Path):
    # lr -1: the config's value check refuses it before the job builds anything (no run yet); lr 1e+30: the loss
    # turns non-finite in training (the trainer's run, closed FAILED); lr 0.001 trains. (Values as Hydra prints them.)
    proc = run_sweep("gdn.sweep.cli", ["baselines", "model=gdn", "optim.optimizer.lr=-1,1e+30,0.001"], tmp_path)
    assert "sweep baselines-" in proc.stdout and "3 jobs, 2 failed" in proc.stdout

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("baselines").experiment_id
    parent = client.search_runs([experiment_id], "tags.sweep_role = 'parent'")[0]
    assert parent.info.status == "FAILED"
    assert (parent.data.tags["jobs_total"], parent.data.tags["jobs_failed"]) == ("3", "2")
    children = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    by_lr = {c.data.tags["overrides"].split("optim.optimizer.lr=")[1].split()[0]: c for c in children}
    assert {lr: c.info.status for lr, c in by_lr.items()} == {"-1": "FAILED", "1e+30": "FAILED", "0.001": "FINISHED"}

    def error_text(run) -> str:
        return Path(client.download_artifacts(run.info.run_id, "error.txt", str(tmp_path))).read_text()

    assert "optim.optimizer.lr=-1.0 must be positive" in error_text(by_lr["-1"])
    assert "non-finite" in error_text(by_lr["1e+30"])
    for child in children:  # every child is tagged for the comparison, even the one that never trained
        assert child.data.tags["architecture"] == "gdn" and child.data.tags["seed"] == "0"
        assert child.data.tags["sweep_id"] == parent.data.tags["sweep_id"]
    assert "eval/loss" in by_lr["0.001"].data.metrics
    report_files = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert "report/report.md" in report_files  # the report is still written from the job that trained
