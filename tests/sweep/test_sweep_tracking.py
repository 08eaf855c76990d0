"""A 2-job sweep against a real `mlflow server` on 127.0.0.1, read back through the REST client (one parent run,
two children pointing at it with their names, tags, metrics and artifacts, the report on the parent) and through
the MLflow UI rendered by headless Chromium (the experiment's runs page shows the parent and both children)."""
from __future__ import annotations

import html.parser
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest
from mlflow.tracking import MlflowClient

from gdn.dashboard.experiments import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND, runs_page_url
from gdn.sweep.parent import SweepParent
from sweep_runner import printed_eval_losses, run_sweep

CHROMIUM = shutil.which("chromium")


@pytest.fixture(scope="module")
def server_sweep(mlflow_server_for_module, tmp_path_factory):
    """(tracking URI, the finished sweep process, its output root): one sweep for this module's tests."""
    out = tmp_path_factory.mktemp("sweep")
    proc = run_sweep("gdn.train", ["-m", "+sweep=baselines", "model=gdn,transformer"], out, mlflow_server_for_module)
    return mlflow_server_for_module, proc, out


def test_a_two_job_sweep_is_a_parent_with_two_children_on_a_tracking_server(server_sweep):
    mlflow_server, proc, tmp_path = server_sweep
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("baselines")  # the experiment is named after the sweep
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND  # the UI opens it on its runs

    parents = client.search_runs([experiment.experiment_id], "tags.sweep_role = 'parent'")
    assert len(parents) == 1
    parent = parents[0]
    tags = parent.data.tags
    assert parent.info.status == "FINISHED"
    assert (tags["jobs_total"], tags["jobs_finished"], tags["jobs_failed"]) == ("2", "2", "0")
    assert tags["sweep_name"] == "baselines" and tags["sweep_id"].startswith("baselines-")
    assert len(tags["git_sha"]) == 40 and tags["git_dirty"] in ("True", "False")
    assert "model=gdn,transformer" in tags["overrides"]
    assert parent.info.run_name.startswith("baselines 20")  # "baselines 2026-12-02 13:50"

    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(c.data.tags["architecture"] for c in children) == ["gdn", "transformer"]
    assert sorted(c.info.run_name for c in children) == ["gdn", "transformer"]  # seed=0 for both: not in the name
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
        assert row in tags["mlflow.note.content"]  # the table is the parent's description too

    sweep_dir = Path(tags["sweep_dir"])
    assert SweepParent.read(sweep_dir).run_id == parent.info.run_id
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0", "1", "report"]  # one folder per job


class TextNodes(html.parser.HTMLParser):
    """The stripped text of every element of a page, outside scripts and styles."""

    def __init__(self):
        super().__init__()
        self.texts: set[str] = set()
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("script", "style")

    def handle_endtag(self, tag):
        self._skip -= tag in ("script", "style")

    def handle_data(self, data):
        if not self._skip and data.strip():
            self.texts.add(data.strip())


def rendered_texts(url: str) -> set[str]:
    """The page as headless Chromium renders it (its JavaScript run until the page is idle, at most 30 s of
    virtual time)."""
    proc = subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--dump-dom",
                           "--virtual-time-budget=30000", url], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    parser = TextNodes()
    parser.feed(proc.stdout)
    return parser.texts


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's `chromium` (apt-get install -y chromium; .ci/run does)")
def test_the_experiments_runs_page_shows_the_parent_and_both_children_by_name(server_sweep):
    mlflow_server, _, _ = server_sweep
    client = MlflowClient(tracking_uri=mlflow_server)
    experiment = client.get_experiment_by_name("baselines")
    runs = client.search_runs([experiment.experiment_id])
    names = {run.info.run_name for run in runs}
    assert len(names) == 3
    # The runs page as gdn prints it, sorted by run name: the table lists children flat instead of folded under
    # their parent (it nests them only in its default order, by start time).
    url = runs_page_url(mlflow_server, experiment.experiment_id) + "&orderByKey=" + quote("tags.`mlflow.runName`")
    for _ in range(3):  # a loaded machine may dump the page before the runs arrived: look again
        texts = rendered_texts(url)
        if names <= texts:
            break
    assert "Runs" in texts and names <= texts, (sorted(names), sorted(texts)[:200])
