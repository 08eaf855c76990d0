"""A 2-job sweep against a real `mlflow server` on 127.0.0.1, read back through the REST client: one parent run,
two children pointing at it with their tags, metrics and artifacts, and the report on the parent."""
from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from gdn.sweep.parent import SweepParent
from sweep_runner import printed_eval_losses, run_sweep


def test_a_two_job_sweep_is_a_parent_with_two_children_on_a_tracking_server(mlflow_server, tmp_path: Path):
    proc = run_sweep("gdn.train", ["-m", "+sweep=baselines", "model=gdn,transformer"], tmp_path, mlflow_server)
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("baselines")  # the experiment is named after the sweep

    parents = client.search_runs([experiment.experiment_id], "tags.sweep_role = 'parent'")
    assert len(parents) == 1
    parent = parents[0]
    tags = parent.data.tags
    assert parent.info.status == "FINISHED"
    assert (tags["jobs_total"], tags["jobs_finished"], tags["jobs_failed"]) == ("2", "2", "0")
    assert tags["sweep_name"] == "baselines" and tags["sweep_id"].startswith("baselines-")
    assert len(tags["git_sha"]) == 40 and tags["git_dirty"] in ("True", "False")
    assert "model=gdn,transformer" in tags["overrides"]

    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(c.data.tags["architecture"] for c in children) == ["gdn", "transformer"]
    printed = printed_eval_losses(proc.stdout)
    assert set(printed) == {c.info.run_id for c in children}  # every job's run is a child, nothing else
    for child in children:
        ctags = child.data.tags
        assert child.info.status == "FINISHED"
        assert ctags["sweep_id"] == tags["sweep_id"] and ctags["seed"] == "0" and ctags["scale"]
        assert ctags["git_sha"] == tags["git_sha"] and f"model={ctags['architecture']}" in ctags["overrides"]
        assert [m.step for m in client.get_metric_history(child.info.run_id, "train/loss")] == [2, 4]
        assert abs(child.data.metrics["eval/loss"] - printed[child.info.run_id]) < 1e-4
        assert {a.path for a in client.list_artifacts(child.info.run_id, "config")} == \
            {"config/resolved.yaml", "config/overrides.txt"}

    parent_artifacts = {a.path for folder in ("sweep", "report")
                        for a in client.list_artifacts(parent.info.run_id, folder)}
    assert {"sweep/config.yaml", "sweep/sweeper_params.yaml", "report/report.md", "report/runs.csv",
            "report/loss_vs_tokens.png", "report/metric_bars.png"} <= parent_artifacts
    report = Path(client.download_artifacts(parent.info.run_id, "report/report.md", str(tmp_path))).read_text()
    for child in children:  # one row per architecture, its eval loss as logged (one seed: no std)
        row = next(line for line in report.splitlines() if line.startswith(f"| {child.data.tags['architecture']} |"))
        assert f"| {child.data.metrics['eval/loss']:.4g} |" in row

    sweep_dir = Path(tags["sweep_dir"])
    assert SweepParent.read(sweep_dir).run_id == parent.info.run_id
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0", "1", "report"]  # one folder per job
