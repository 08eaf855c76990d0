"""`gdn-report EXPERIMENT_OR_PARENT_RUN`: the comparison table of a sweep, printed, written and logged to MLflow.

    gdn-report baselines                         # an experiment: all its runs; artifacts to report_experiment/
                                                 # of its newest sweep's parent run
    gdn-report 3f2c...e1                         # one sweep: the children of this parent run
    gdn-report baselines --out reports/baselines --tracking-uri http://127.0.0.1:5000
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from gdn.train.tracking import resolve_tracking_uri


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gdn-report", description=__doc__.split("\n")[0])
    parser.add_argument("target", help="an MLflow experiment name, or the run id of a sweep's parent run")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow store (default: $MLFLOW_TRACKING_URI, else outputs/mlflow.db under the output "
                             "root, as gdn-train)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the files (default: reports/TARGET "
                                                                 "under the output root)")
    parser.add_argument("--no-log", action="store_true", help="do not log the files to the parent run")
    return parser.parse_args(argv)


def output_root() -> Path:
    return Path(os.environ.get("GDN_OUTPUT_ROOT", "outputs")).expanduser().resolve()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from gdn.report.build import write_report

    uri = resolve_tracking_uri(args.tracking_uri, output_root())
    out_dir = args.out or output_root() / "reports" / args.target
    try:
        report = write_report(uri, args.target, out_dir, log_to_parent=not args.no_log)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"# {report.run_set.title}\n\n{report.table_markdown}")
    print(f"wrote {', '.join(p.name for p in report.files)} to {out_dir}"
          + (f"; logged to parent run {report.logged_to} under {report.artifact_dir}/" if report.logged_to else ""))


if __name__ == "__main__":
    main()
