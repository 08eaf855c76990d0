"""The comparison tables: one row per variant, mean +- std over its seeds, as markdown (and one CSV row per run).

Main table: runs (seeds), parameters, tokens seen, tokens/s (median over the run's log intervals), MFU where logged,
final train loss, then every evaluation metric (eval/loss and eval/accuracy first; gdn-eval's val/, lm_eval/, ...).
Metrics logged per length (gdn-eval's `mqar/acc_kv{n}_len{T}`, `niah/s{task}_acc_len{T}`) get a table of their own
per prefix, columns ordered by length.
"""
from __future__ import annotations

import csv
import math
import re
import statistics
from pathlib import Path

from gdn.report.collect import RunRecord, is_mfu
from gdn.report.variants import Variant

# mqar/acc_kv8_len256 -> family mqar/acc_kv8, length 256
LENGTH_METRIC = re.compile(r"^(?P<family>.+?)[/_]len[_=]?(?P<length>\d+)$")
LEADING_METRICS = ("train/loss", "eval/loss", "eval/accuracy")
NOT_COMPARED = ("train/", "system/")  # training-time readings; the table takes train/loss, tokens/s and MFU itself


def metric_order(key: str) -> tuple:
    if key in LEADING_METRICS:
        return (0, LEADING_METRICS.index(key), "", 0)
    match = LENGTH_METRIC.match(key)
    if match:
        return (2, 0, match["family"], int(match["length"]))
    return (1, 0, key, 0)


def _metric_keys(variants: list[Variant]) -> set[str]:
    return {k for v in variants for run in v.runs for k in run.metrics}


def metric_columns(variants: list[Variant]) -> list[str]:
    """train/loss and every compared metric that is not logged per length."""
    keys = {k for k in _metric_keys(variants)
            if k == "train/loss" or not (k.startswith(NOT_COMPARED) or LENGTH_METRIC.match(k))}
    return sorted(keys, key=metric_order)


def length_columns(variants: list[Variant]) -> dict[str, list[str]]:
    """{prefix: [metric keys by family, then length]} of the per-length metrics (prefix: text before the first /)."""
    tables: dict[str, list[str]] = {}
    for key in sorted((k for k in _metric_keys(variants) if LENGTH_METRIC.match(k)), key=metric_order):
        tables.setdefault(key.split("/", 1)[0], []).append(key)
    return tables


def mfu_key(variants: list[Variant]) -> str | None:
    return next((k for v in variants for run in v.runs for k in sorted(run.metrics) if is_mfu(k)), None)


def human(count: float | None, digits: int = 4) -> str:
    """149900 -> 149.9K, 1.31e9 -> 1.31B, 707.1 -> 707."""
    if count is None or not math.isfinite(count):
        return "-"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(count) >= size:
            return f"{count / size:.{digits}g}{unit}"
    return f"{count:.0f}" if abs(count) >= 1 else f"{count:.{digits}g}"  # 707.1 -> 707, not 7.1e+02


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


def length_label(key: str) -> str:
    """mqar/acc_kv8_len256 -> "acc_kv8 @256"."""
    match = LENGTH_METRIC.match(key)
    return f"{match['family'].split('/', 1)[-1]} @{match['length']}"


def _markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def markdown_table(variants: list[Variant]) -> str:
    """The main table, then one table per prefix of per-length metrics."""
    lines = _markdown(*table_rows(variants))
    for prefix, keys in length_columns(variants).items():
        header = ["variant"] + [length_label(k) for k in keys]
        lines += ["", f"{prefix} by length:", ""]
        lines += _markdown(header, [[v.label] + [mean_std(v.values(k)) for k in keys] for v in variants])
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
