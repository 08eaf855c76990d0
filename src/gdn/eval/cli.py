"""`gdn-eval`: the evaluation suite on a trained run, printed as tables and logged to MLflow.

    gdn-eval outputs/runs/<date>/<time>                          # the run's latest checkpoint, every part
    gdn-eval outputs/runs/<date>/<time> eval.niah.lengths=[1024,2048] eval.niah.num_samples=20
    gdn-eval run=outputs/runs/<date>/<time>/checkpoints/step-000500 eval.mqar.enabled=false
    gdn-eval RUN eval.lm_eval_tasks=[lambada_openai] eval.lm_eval.limit=100
    gdn-eval outputs/multiruns/<date>/<time>                      # every job of a sweep, each into its own run

Options are the keys of conf/eval/default.yaml. gdn-train runs the same suite at the end with eval.at_end=true.
"""
from __future__ import annotations

import sys
from pathlib import Path

from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from gdn.eval.at_end import report
from gdn.eval.loading import load_run
from gdn.eval.suite import SuiteResult, resolve_device, run_suite
from gdn.eval.tracking import log_eval_metrics
from gdn.config import compose_config
from gdn.run_folder import find_runs
from gdn.train.tracking import resolve_tracking_uri

USAGE = "usage: gdn-eval RUN_DIR_OR_CHECKPOINT [eval.KEY=VALUE ...] (keys: conf/eval/default.yaml)"


def compose_eval_config(argv: list[str]) -> DictConfig:
    """conf/evaluate.yaml with the command line; a first argument without '=' is the run."""
    overrides = [f"run={arg}" if "=" not in arg and i == 0 else arg for i, arg in enumerate(argv)]
    return compose_config("evaluate", overrides)


def evaluate_run(path: str | Path, eval_cfg: DictConfig) -> tuple[SuiteResult, str | None]:
    """Load the run, run the suite, print it, log it; returns the result and the MLflow run id used (if any)."""
    run = load_run(path, resolve_device(eval_cfg.device))
    result = run_suite(run.model, run.config, eval_cfg, run.tokenizer)
    step = run.checkpoint.step or 0
    report(result, f"evaluation of {run.checkpoint.path} (step {step})")
    if not eval_cfg.mlflow.enabled or not result.metrics:
        return result, None
    uri = resolve_tracking_uri(run.config.logging.tracking_uri, run.config.paths.output_root)
    run_id = log_eval_metrics(result.metrics, tracking_uri=uri, run_id=run.checkpoint.mlflow_run_id,
                              experiment_name=eval_cfg.mlflow.experiment_name, step=step,
                              tags={"gdn.eval.checkpoint": str(run.checkpoint.path), "run_dir": str(run.run_dir)},
                              run_name="eval " + "/".join(run.run_dir.parts[-2:]))
    print(f"MLflow run id {run_id} at {uri}")
    return result, run_id


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(0 if argv else 2)
    try:
        cfg = compose_eval_config(argv)
        run = cfg.run
    except MissingMandatoryValue:
        print(f"error: no run given; {USAGE}", file=sys.stderr)
        raise SystemExit(2) from None
    except HydraException as error:
        print(f"error: {error}; {USAGE}", file=sys.stderr)
        raise SystemExit(2) from None
    failed = 0
    for path in find_runs(run):  # a multirun folder: every job, one after the other; a failing job is reported
        try:
            evaluate_run(path, cfg.eval)
        except (FileNotFoundError, ValueError) as error:
            print(f"error: {path}: {error}", file=sys.stderr)
            failed += 1
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
