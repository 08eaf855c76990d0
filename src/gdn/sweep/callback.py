"""The Hydra callback that makes every multirun one MLflow parent run (registered in conf/train.yaml).

    on_multirun_start: create the parent run, named after the sweep, in the experiment `logging.experiment_name` (a
                       sweep file sets it from the sweep's name; a model-training experiment, gdn.dashboard), tag it,
                       store the sweep's config, and write the record the jobs read (gdn.sweep.parent): each job
                       then starts its run as a child of it, named after the overrides that differ between the jobs.
    on_multirun_end:   count the children by status, write the report (`logging.sweep_report`) and close the
                       parent: FINISHED, or FAILED when any child failed.
Only global rank 0 talks to MLflow. The client API is used directly, so the parent never becomes the process's
active run (with the basic launcher the jobs run in this same process and start their own runs).
"""
from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from gdn.config.paths import source_checkout
from gdn.dashboard.experiments import runs_page_url, training_experiment_id
from gdn.dashboard.run_names import sweep_run_name, varying_sweep_keys
from gdn.sweep.parent import SweepParent
from gdn.train.tracking import git_state, is_rank_zero, resolve_tracking_uri

ADHOC_SWEEP_NAME = "multirun"  # a multirun started without +sweep=NAME


def children_by_status(client, parent: SweepParent) -> dict[str, list[str]]:
    """{status: [child run id, ...]} of the parent's children."""
    runs = client.search_runs([parent.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.run_id}'",
                              max_results=10000)
    statuses: dict[str, list[str]] = {}
    for run in runs:
        statuses.setdefault(run.info.status, []).append(run.info.run_id)
    return statuses


class MlflowSweepCallback(Callback):
    def __init__(self) -> None:
        self.parent: SweepParent | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.logging.enabled or not is_rank_zero():
            return
        from mlflow.tracking import MlflowClient

        uri = resolve_tracking_uri(config.logging.tracking_uri, config.paths.output_root)
        client = MlflowClient(tracking_uri=uri)
        experiment_name = config.logging.experiment_name
        experiment_id = training_experiment_id(client, experiment_name)
        sweep_name = OmegaConf.select(config, "sweep.name", default=ADHOC_SWEEP_NAME)
        started = datetime.now()
        sweep_id = f"{sweep_name}-{started:%Y%m%d-%H%M%S-%f}"
        sweep_dir = Path(config.hydra.sweep.dir)
        params = config.hydra.sweeper.get("params")  # None for a plain `gdn-train -m a=1,2` (sweep on the command line)
        params = OmegaConf.to_container(params, resolve=True) if params is not None else {}
        name_keys = varying_sweep_keys(params, list(config.hydra.overrides.task))
        run = client.create_run(experiment_id, run_name=sweep_run_name(sweep_name, started), tags={
            **git_state(source_checkout() or Path.cwd()),  # a wheel: the cwd's repo
            "sweep_id": sweep_id, "sweep_name": sweep_name, "sweep_role": "parent",
            "overrides": " ".join(config.hydra.overrides.task)[:5000], "sweep_dir": str(sweep_dir),
            "sweeper": str(config.hydra.sweeper._target_).rsplit(".", 1)[-1],
        })
        self.parent = SweepParent(run.info.run_id, experiment_id, uri, sweep_id, sweep_name, tuple(name_keys))
        client.log_text(self.parent.run_id, OmegaConf.to_yaml(params), "sweep/sweeper_params.yaml")
        client.log_text(self.parent.run_id, OmegaConf.to_yaml({k: v for k, v in config.items() if k != "hydra"}),
                        "sweep/config.yaml")
        self.parent.write(sweep_dir)
        print(f"sweep {sweep_id}: MLflow experiment {experiment_name!r}, parent run {self.parent.run_id} at {uri}; "
              f"runs page {runs_page_url(uri, experiment_id)}")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent is None:
            return
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.parent.tracking_uri)
        statuses = children_by_status(client, self.parent)
        failed = statuses.get("FAILED", []) + statuses.get("KILLED", [])
        total = sum(len(ids) for ids in statuses.values())
        for key, value in {"jobs_total": total, "jobs_finished": len(statuses.get("FINISHED", [])),
                           "jobs_failed": len(failed)}.items():
            client.set_tag(self.parent.run_id, key, str(value))
        if OmegaConf.select(config, "logging.sweep_report", default=False) and total > len(failed):
            self._report(config)
        client.set_terminated(self.parent.run_id, "FAILED" if failed else "FINISHED")
        print(f"sweep {self.parent.sweep_id}: {total} jobs, {len(failed)} failed"
              + (f" (runs {', '.join(failed)})" if failed else "") + f"; parent run {self.parent.run_id}")

    def _report(self, config: DictConfig) -> None:
        from gdn.report.build import write_report

        out_dir = Path(config.hydra.sweep.dir) / "report"
        try:
            report = write_report(self.parent.tracking_uri, self.parent.run_id, out_dir)
        except Exception as error:  # the sweep's runs are kept; the report can be rebuilt with gdn-report
            print(f"warning: the sweep report failed ({error}); rebuild it with "
                  f"`gdn-report {self.parent.run_id}`", file=sys.stderr)
            return
        print(report.table_markdown)
