"""Build the report of a sweep or experiment: collect runs -> variants -> table + plots -> files -> parent run."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gdn.report.collect import RunSet, collect_runs
from gdn.report.plots import all_plots
from gdn.report.table import markdown_table, write_runs_csv
from gdn.report.variants import group_variants

ARTIFACT_DIR = "report"                  # a sweep's report, in its parent run
EXPERIMENT_ARTIFACT_DIR = "report_experiment"  # an experiment's report (all sweeps), in its newest parent run
NOTE_TAG = "mlflow.note.content"         # a run's description: the UI's run overview shows it as markdown
MAX_NOTE_LENGTH = 8000                   # MLflow's limit on a tag value


@dataclass
class Report:
    run_set: RunSet
    table_markdown: str
    files: list[Path]          # report.md, runs.csv and the plots, all under the output folder
    logged_to: str | None      # the parent run that holds them as artifacts
    artifact_dir: str          # ... under this folder


def summary_lines(run_set: RunSet, table: str) -> list[str]:
    failed = [r for r in run_set.runs if r.status != "FINISHED"]
    lines = [f"# {run_set.title}", "",
             f"{len(run_set.runs)} runs, {len(failed)} not finished; mean ± std over seeds "
             f"(tokens/s and MFU: median over each run's log intervals).", "", table]
    if failed:
        lines += ["Not finished: " + ", ".join(f"{r.run_id} ({r.status}, {r.architecture})" for r in failed), ""]
    return lines


def report_markdown(run_set: RunSet, table: str, plots: list[Path]) -> str:
    return "\n".join(summary_lines(run_set, table) + [f"![{p.stem}]({p.name})" for p in plots]) + "\n"


def description_markdown(run_set: RunSet, table: str, files: list[Path], artifact_dir: str) -> str:
    """The report as the parent run's description: the table, then where the plots are (a description cannot show
    artifacts); cut to MLflow's tag limit, pointing at report.md for the rest."""
    where = f"Plots and runs.csv: the run's `{artifact_dir}/` artifacts ({', '.join(p.name for p in files)})."
    text = "\n".join(summary_lines(run_set, table) + [where]) + "\n"
    if len(text) <= MAX_NOTE_LENGTH:
        return text
    cut = f"\n... (cut; the whole table: `{artifact_dir}/report.md`)\n\n{where}\n"
    return text[: MAX_NOTE_LENGTH - len(cut)].rsplit("\n", 1)[0] + cut


def write_report(tracking_uri: str, target: str, out_dir: Path, log_to_parent: bool = True) -> Report:
    """Write report.md, runs.csv and the plots of `target` (parent run id or experiment name) into out_dir and, when
    there is a parent run, log them to it: under report/ for one sweep (and the table as the run's description, so
    that the UI's run overview shows it), report_experiment/ for a whole experiment (into its newest parent run,
    whose own sweep report and description stay as they were)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    run_set = collect_runs(client, target)
    variants = group_variants(run_set.runs)
    if not variants:
        raise ValueError(f"{target!r} has no finished runs to compare ({len(run_set.runs)} runs in all)")
    out_dir.mkdir(parents=True, exist_ok=True)
    table = markdown_table(variants)
    plots = all_plots(variants, run_set.runs, out_dir)
    labels = {run.run_id: v.label for v in variants for run in v.runs}
    write_runs_csv(run_set.runs, labels, out_dir / "runs.csv")
    (out_dir / "report.md").write_text(report_markdown(run_set, table, plots))
    files = [out_dir / "report.md", out_dir / "runs.csv", *plots]
    logged_to = None
    artifact_dir = EXPERIMENT_ARTIFACT_DIR if run_set.whole_experiment else ARTIFACT_DIR
    if log_to_parent and run_set.parent_run_id:
        for path in files:
            client.log_artifact(run_set.parent_run_id, str(path), artifact_dir)
        if not run_set.whole_experiment:
            client.set_tag(run_set.parent_run_id, NOTE_TAG, description_markdown(run_set, table, files, artifact_dir))
        logged_to = run_set.parent_run_id
    return Report(run_set, table, files, logged_to, artifact_dir)
