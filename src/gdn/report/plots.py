"""PNG plots of a comparison (matplotlib, Agg backend: no display needed). Each function returns the files it
wrote; a plot whose data the runs do not have is skipped.

    loss_vs_tokens.png      train loss against tokens seen, one line per variant (mean over seeds, band = +- std)
    accuracy_vs_length.png  MQAR difficulty: eval accuracy against data.seq_len (one panel per data.num_kv_pairs)
                            when the sweep varied them, one line per architecture
    <prefix>_vs_length.png  metrics logged per length by gdn-eval (mqar/acc_kv8_len256, niah/s2_acc_len1024):
                            one panel per metric family, value against length, one line per variant
    metric_bars.png         eval loss / accuracy (or train loss) per variant, error bars = std over seeds
"""
from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gdn.report.collect import RunRecord  # noqa: E402
from gdn.report.table import LENGTH_METRIC, length_columns  # noqa: E402
from gdn.report.variants import Variant  # noqa: E402

SEQ_LEN, KV_PAIRS = "data.seq_len", "data.num_kv_pairs"


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _length_axis(ax, lengths: list[int]) -> None:
    """Log-2 axis labelled with the lengths themselves (64, 128, ... rather than 2^6, 2^7)."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(lengths, [str(n) for n in lengths])
    ax.minorticks_off()


def loss_vs_tokens(variants: list[Variant], out_dir: Path) -> list[Path]:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    drawn = False
    for v in variants:
        # steps that every seed logged both the loss and the token count at
        steps = sorted(set.intersection(*(set(r.histories.get("train/loss", {}))
                                          & set(r.histories.get("train/tokens_seen", {})) for r in v.runs)))
        if not steps:
            continue
        tokens = [statistics.fmean(r.histories["train/tokens_seen"][s] for r in v.runs) for s in steps]
        losses = [[r.histories["train/loss"][s] for r in v.runs] for s in steps]
        mean = [statistics.fmean(x) for x in losses]
        line, = ax.plot(tokens, mean, label=v.label)
        if len(v.runs) > 1:
            std = [statistics.stdev(x) for x in losses]
            ax.fill_between(tokens, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            color=line.get_color(), alpha=0.2)
        drawn = True
    if not drawn:
        plt.close(fig)
        return []
    ax.set(xlabel="tokens seen", ylabel="train loss", title="training loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return [_save(fig, out_dir / "loss_vs_tokens.png")]


def _param(run: RunRecord, name: str) -> int | None:
    value = run.params.get(name)
    return int(value) if value is not None and value.lstrip("-").isdigit() else None


def accuracy_vs_length(runs: list[RunRecord], out_dir: Path) -> list[Path]:
    """Only when the finished runs cover more than one sequence length and have eval/accuracy."""
    runs = [r for r in runs if r.status == "FINISHED" and "eval/accuracy" in r.metrics and _param(r, SEQ_LEN)]
    if len({_param(r, SEQ_LEN) for r in runs}) < 2:
        return []
    panels = sorted({_param(r, KV_PAIRS) for r in runs}, key=lambda k: (k is None, k))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False, sharey=True)
    for ax, kv in zip(axes[0], panels):
        points: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
        for r in runs:
            if _param(r, KV_PAIRS) == kv:
                points[r.architecture][_param(r, SEQ_LEN)].append(r.metrics["eval/accuracy"])
        for arch, by_len in points.items():
            lengths = sorted(by_len)
            ax.plot(lengths, [statistics.fmean(by_len[n]) for n in lengths], marker="o", label=arch)
        ax.set(xlabel="sequence length", title=f"{kv} key-value pairs" if kv else "", ylim=(-0.02, 1.02))
        _length_axis(ax, sorted({_param(r, SEQ_LEN) for r in runs}))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("eval accuracy")
    axes[0][-1].legend(fontsize=8)
    return [_save(fig, out_dir / "accuracy_vs_length.png")]


def per_length_metrics(variants: list[Variant], out_dir: Path) -> list[Path]:
    """Metrics logged per length (gdn-eval's mqar/acc_kv{n}_len{T}, niah/s{task}_acc_len{T}): one PNG per prefix
    (mqar_vs_length.png, niah_vs_length.png), one panel per metric family, value against length per variant."""
    files = []
    for prefix, keys in length_columns(variants).items():
        families: dict[str, dict[int, str]] = defaultdict(dict)
        for key in keys:
            match = LENGTH_METRIC.match(key)
            families[match["family"]][int(match["length"])] = key
        fig, axes = plt.subplots(1, len(families), figsize=(4.5 * len(families), 4), squeeze=False, sharey=True)
        for ax, (family, by_length) in zip(axes[0], families.items()):
            for v in variants:
                points = [(n, v.values(by_length[n])) for n in sorted(by_length)]
                points = [(n, statistics.fmean(values)) for n, values in points if values]
                if points:
                    ax.plot(*zip(*points), marker="o", label=v.label)
            ax.set(xlabel="length", title=family)
            _length_axis(ax, sorted(by_length))
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel(prefix)
        axes[0][-1].legend(fontsize=8)
        files.append(_save(fig, out_dir / f"{prefix}_vs_length.png"))
    return files


def metric_bars(variants: list[Variant], out_dir: Path) -> list[Path]:
    metrics = [m for m in ("eval/loss", "eval/accuracy") if any(v.values(m) for v in variants)] or \
              [m for m in ("train/loss",) if any(v.values(m) for v in variants)]
    if not metrics or len(variants) < 2:
        return []
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(5.0, 0.7 * len(variants) + 2) * len(metrics), 4.5),
                             squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        values = [v.values(metric) for v in variants]
        means = [statistics.fmean(x) if x else float("nan") for x in values]
        errors = [statistics.stdev(x) if len(x) > 1 else 0.0 for x in values]
        ax.bar(range(len(variants)), means, yerr=errors, capsize=3, color="tab:blue")
        ax.set_xticks(range(len(variants)), [v.label for v in variants], rotation=45, ha="right", fontsize=8)
        ax.set(ylabel=metric, title=metric)
        ax.grid(alpha=0.3, axis="y")
    return [_save(fig, out_dir / "metric_bars.png")]


def all_plots(variants: list[Variant], runs: list[RunRecord], out_dir: Path) -> list[Path]:
    return (loss_vs_tokens(variants, out_dir) + accuracy_vs_length(runs, out_dir)
            + per_length_metrics(variants, out_dir) + metric_bars(variants, out_dir))
