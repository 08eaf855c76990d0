"""The comparison table: one row per variant, mean +- std over its seeds, as markdown (and one CSV row per run).

Columns: runs (seeds), parameters, tokens seen, tokens/s (median over the run's log intervals), MFU where logged,
final train loss, then every eval/ metric (eval/loss and eval/accuracy first, per-length metrics by length).
"""
from __future__ import annotations

import csv
import math
import re
import statistics
from pathlib import Path

from gdn.report.collect import RunRecord, is_mfu
from gdn.report.variants import Variant

LENGTH_METRIC = re.compile(r"^(?P<family>.+?)[/_]len[_=]?(?P<length>\d+)$")  # eval/niah_2/len1024, eval/ppl_len4096
LEADING_METRICS = ("train/loss", "eval/loss", "eval/accuracy")


def metric_order(key: str) -> tuple:
    if key in LEADING_METRICS:
        return (0, LEADING_METRICS.index(key), "", 0)
    match = LENGTH_METRIC.match(key)
    if match:
        return (2, 0, match["family"], int(match["length"]))
    return (1, 0, key, 0)


def metric_columns(variants: list[Variant]) -> list[str]:
    keys = {k for v in variants for run in v.runs for k in run.metrics
            if k == "train/loss" or k.startswith("eval/")}
    return sorted(keys, key=metric_order)


def mfu_key(variants: list[Variant]) -> str | None:
    return next((k for v in variants for run in v.runs for k in sorted(run.metrics) if is_mfu(k)), None)


def human(count: float | None, digits: int = 4) -> str:
    """149900 -> 149.9K, 1.31e9 -> 1.31B."""
    if count is None or not math.isfinite(count):
        return "-"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(count) >= size:
            return f"{count / size:.{digits}g}{unit}"
    return f"{count:.{digits}g}"


def mean_std(values: list[float], digits: int = 4, counts: bool = False) -> str:
    """mean ± std over seeds (the sample std), the mean alone for one seed; counts=True: 6.65K ± 1K."""
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return "-"
    mean = statistics.fmean(values)
    text = human(mean, digits) if counts else f"{mean:.{digits}g}"
    if len(values) == 1:
        return text
    std = statistics.stdev(values)
    return f"{text} ± {human(std, 2) if counts else f'{std:.2g}'}"


def table_rows(variants: list[Variant]) -> tuple[list[str], list[list[str]]]:
    metrics, mfu = metric_columns(variants), mfu_key(variants)
    header = ["variant", "runs", "params", "tokens", "tokens/s"] + (["MFU"] if mfu else []) + metrics
    rows = []
    for v in variants:
        params = v.param("num_parameters")
        tokens = v.values("train/tokens_seen")
        row = [v.label, str(len(v.runs)), human(float(params)) if params else "-",
               human(statistics.fmean(tokens)) if tokens else "-",
               mean_std(v.values("train/tokens_per_s", history_median=True), digits=3, counts=True)]
        if mfu:
            row.append(mean_std(v.values(mfu, history_median=True), digits=3))
        rows.append(row + [mean_std(v.values(m)) for m in metrics])
    return header, rows


def markdown_table(variants: list[Variant]) -> str:
    header, rows = table_rows(variants)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_runs_csv(runs: list[RunRecord], labels: dict[str, str], path: Path) -> None:
    """Every run (failed ones too) with its status, variant, seed and latest metrics."""
    metric_keys = sorted({k for run in runs for k in run.metrics}, key=metric_order)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["run_id", "status", "variant", "architecture", "seed", "num_parameters", *metric_keys])
        for run in runs:
            writer.writerow([run.run_id, run.status, labels.get(run.run_id, ""), run.architecture,
                             run.tags.get("seed", ""), run.params.get("num_parameters", ""),
                             *(run.metrics.get(k, "") for k in metric_keys)])
