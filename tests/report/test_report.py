"""gdn-report on a real MLflow store: real tiny training runs (an experiment without a sweep), and a sweep-shaped
store (parent + children, per-length metrics, a failed child) written through the MLflow client."""
from __future__ import annotations

import csv
import statistics
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from gdn.config import CONF_DIR, register_resolvers
from gdn.report.build import MAX_NOTE_LENGTH, description_markdown, write_report
from gdn.report.cli import main as report_main
from gdn.report.collect import RunRecord, RunSet
from gdn.report.table import human, mean_std
from gdn.report.variants import group_variants
from gdn.train.main import run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = ["scale=tiny", "trainer.max_steps=4", "trainer.log_every=2", "trainer.eval_every=4",
        "trainer.checkpoint_every=4", "trainer.progress_bar=false", "sched.warmup_steps=2", "data.seq_len=32",
        "data.num_kv_pairs=4", "data.batch_size=8", "data.num_eval_examples=32"]


def train_tiny(tmp_path: Path, model: str, seed: int, experiment: str) -> None:
    """One real 4-step run into the sqlite store under tmp_path, tagged like a job with `model=.. seed=..`."""
    register_resolvers()
    overrides = [f"model={model}", f"seed={seed}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"paths.output_root={tmp_path}", "logging=mlflow",
                                                      f"logging.experiment_name={experiment}", *TINY, *overrides])
    run(cfg, tmp_path / "runs" / f"{model}-{seed}", overrides, {"model": model, "scale": "tiny"})


def test_report_of_an_experiment_of_real_runs(tmp_path: Path, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for model, seed in (("gdn", 0), ("gdn", 1), ("transformer", 0)):
        train_tiny(tmp_path, model, seed, "compare")
    capsys.readouterr()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    report_main(["compare", "--tracking-uri", uri, "--out", str(tmp_path / "report")])
    printed = capsys.readouterr().out

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("compare").experiment_id])
    gdn = [r for r in runs if r.data.tags["architecture"] == "gdn"]
    losses = [r.data.metrics["eval/loss"] for r in gdn]
    expected = f"{statistics.fmean(losses):.4g} ± {statistics.stdev(losses):.2g}"
    header = next(line for line in printed.splitlines() if line.startswith("| variant |"))
    gdn_row = next(line for line in printed.splitlines() if line.startswith("| gdn |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    cells = dict(zip(columns, (c.strip() for c in gdn_row.strip("|").split("|"))))
    assert cells["runs"] == "2" and cells["eval/loss"] == expected
    assert cells["params"] == human(float(gdn[0].data.params["num_parameters"]))
    assert cells["tokens"] == "1.024K"  # 4 steps x 8 sequences x 32 tokens
    assert "| transformer | 1 |" in printed
    assert "logged to parent run" not in printed  # an experiment without a sweep has no parent to log to

    out = tmp_path / "report"
    with (out / "runs.csv").open() as f:
        assert sorted(row["variant"] for row in csv.DictReader(f)) == ["gdn", "gdn", "transformer"]
    for name in ("loss_vs_tokens.png", "metric_bars.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    assert "![loss_vs_tokens](loss_vs_tokens.png)" in (out / "report.md").read_text()


def make_sweep_store(uri: str) -> tuple[str, dict[tuple[str, int], float]]:
    """A parent with one child per (model, seq_len), MQAR accuracy and gdn-eval's per-length metrics, plus one
    FAILED child. Returns the parent id and the accuracy of each (model, seq_len)."""
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("difficulty")
    parent = client.create_run(experiment_id, tags={"sweep_role": "parent", "sweep_id": "mqar_difficulty-1"})
    accuracy = {("gdn", 64): 0.9, ("gdn", 128): 0.7, ("mamba2", 64): 0.8, ("mamba2", 128): 0.4}
    for (model, seq_len), acc in accuracy.items():
        child = client.create_run(experiment_id, tags={
            "mlflow.parentRunId": parent.info.run_id, "architecture": model, "seed": "0",
            "overrides": f"+sweep=mqar_difficulty model={model} data.seq_len={seq_len} seed=0"})
        run_id = child.info.run_id
        for key, value in {"data.seq_len": seq_len, "data.num_kv_pairs": 4, "num_parameters": 1000}.items():
            client.log_param(run_id, key, value)
        for step, loss in ((2, 4.0), (4, 3.0)):
            client.log_metric(run_id, "train/loss", loss, step=step)
            client.log_metric(run_id, "train/tokens_seen", 256 * step, step=step)
        client.log_metric(run_id, "eval/accuracy", acc, step=4)
        for length in (1024, 2048):
            client.log_metric(run_id, f"niah/s2_acc_len{length}", acc * 1024 / length, step=4)
        client.set_terminated(run_id)
    failed = client.create_run(experiment_id, tags={"mlflow.parentRunId": parent.info.run_id, "architecture": "gdn",
                                                    "overrides": "model=gdn data.seq_len=256 seed=0"})
    client.set_terminated(failed.info.run_id, "FAILED")
    return parent.info.run_id, accuracy


def test_report_of_a_sweep_with_per_length_metrics_and_a_failed_child(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent_id, accuracy = make_sweep_store(uri)
    report = write_report(uri, parent_id, tmp_path / "out")

    assert report.logged_to == parent_id
    lines = report.table_markdown.splitlines()
    row = next(line for line in lines if line.startswith("| gdn seq_len=128 |"))
    assert f"| {accuracy[('gdn', 128)]:.4g} |" in row  # main table: eval/accuracy of that run
    by_length = lines[lines.index("niah by length:") + 2:]
    assert by_length[0] == "| variant | s2_acc @1024 | s2_acc @2048 |"
    assert "| mamba2 seq_len=128 | 0.4 | 0.2 |" in by_length
    text = (tmp_path / "out" / "report.md").read_text()
    assert "4 not finished" not in text and "5 runs, 1 not finished" in text and "(FAILED, gdn)" in text

    client = MlflowClient(tracking_uri=uri)
    logged = {a.path for a in client.list_artifacts(parent_id, "report")}
    assert logged == {f"report/{name}" for name in ("report.md", "runs.csv", "loss_vs_tokens.png",
                                                    "accuracy_vs_length.png", "niah_vs_length.png",
                                                    "metric_bars.png")}
    for path in report.files:
        assert path.suffix != ".png" or path.read_bytes()[:8] == PNG_MAGIC

    # The whole experiment: the same runs, logged beside (not over) the sweep's own report.
    whole = write_report(uri, "difficulty", tmp_path / "experiment")
    assert whole.logged_to == parent_id and whole.table_markdown == report.table_markdown
    assert (report.artifact_dir, whole.artifact_dir) == ("report", "report_experiment")
    assert {a.path for a in client.list_artifacts(parent_id, "report_experiment")} == \
        {p.replace("report/", "report_experiment/") for p in logged}


def record(run_id: str, overrides: str, status: str = "FINISHED") -> RunRecord:
    return RunRecord(run_id, status, int(run_id, 16), {"overrides": overrides, "architecture": "gdn"}, {}, {})


def test_variants_are_named_by_what_differs_besides_the_seed():
    runs = [record("1", "+sweep=gdn_ablation +ablation=full seed=0"),
            record("2", "+sweep=gdn_ablation +ablation=no_gate seed=0"),
            record("3", "+sweep=gdn_ablation +ablation=no_gate seed=1"),
            record("4", "+sweep=gdn_ablation +ablation=no_delta seed=0", status="FAILED")]
    variants = group_variants(runs)
    assert [(v.label, [r.run_id for r in v.runs]) for v in variants] == [("full", ["1"]), ("no_gate", ["2", "3"])]
    two_keys = group_variants([record("1", "model=gdn optim.optimizer.lr=0.001"),
                               record("2", "model=mamba2 optim.optimizer.lr=0.01")])
    assert [v.label for v in two_keys] == ["gdn lr=0.001", "mamba2 lr=0.01"]


def test_number_formats():
    assert mean_std([1.0, 2.0, 3.0]) == "2 ± 1" and mean_std([0.97812]) == "0.9781" and mean_std([]) == "-"
    assert mean_std([6000.0, 7000.0], digits=3, counts=True) == "6.5K ± 707"
    assert human(149_900) == "149.9K" and human(1.31e9) == "1.31B" and human(707.1) == "707"


def test_an_unknown_target_is_one_clear_error(tmp_path: Path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(tracking_uri=uri).create_experiment("baselines")
    with pytest.raises(SystemExit) as exit_info:
        report_main(["baseline", "--tracking-uri", uri])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "'baseline' is neither a run id nor an experiment" in err and "baselines" in err


def test_the_description_is_the_table_cut_to_mlflows_tag_limit():
    run_set = RunSet("baselines-1", "1", "parent", [])
    files = [Path("report.md"), Path("loss_vs_tokens.png")]
    short = description_markdown(run_set, "| a |\n|---|\n| 1 |", files, "report")
    assert "| 1 |" in short and "`report/` artifacts (report.md, loss_vs_tokens.png)" in short
    rows = "\n".join(f"| variant{i} | {i} |" for i in range(1000))
    long = description_markdown(run_set, rows, files, "report")
    assert len(long) <= MAX_NOTE_LENGTH and "| variant0 | 0 |" in long and "the whole table: `report/report.md`" in long
    assert all(line.startswith("| variant") for line in long.split("\n...")[0].splitlines()[4:])  # whole rows only
