"""Printed tables of the suite's metrics: one per part, lengths as columns where the part has them."""
from __future__ import annotations

import re
from collections import defaultdict

_MQAR = re.compile(r"mqar/acc_kv(\d+)_len(\d+)")
_NIAH = re.compile(r"niah/s(\d+)_acc_len(\d+)")
_VAL = re.compile(r"val/(loss|ppl|tokens)_(.+)")


def _grid(title: str, cells: dict[tuple[str, int], float], row_name: str) -> list[str]:
    rows = sorted({r for r, _ in cells}, key=lambda r: (len(r), r))
    columns = sorted({c for _, c in cells})
    lines = [title, f"{row_name:>8} " + "".join(f"{c:>9}" for c in columns)]
    for r in rows:
        lines.append(f"{r:>8} " + "".join(f"{cells[(r, c)]:>9.3f}" if (r, c) in cells else f"{'-':>9}"
                                           for c in columns))
    return lines


def format_tables(metrics: dict[str, float]) -> str:
    """Perplexity by length factor, MQAR accuracy (kv pairs x length), S-NIAH accuracy (task x length), then
    every other metric (lm-eval tasks) one per line."""
    val, mqar, niah, other = defaultdict(dict), {}, {}, {}
    for name, value in metrics.items():
        if m := _VAL.fullmatch(name):
            val[m.group(2)][m.group(1)] = value
        elif m := _MQAR.fullmatch(name):
            mqar[(m.group(1), int(m.group(2)))] = value
        elif m := _NIAH.fullmatch(name):
            niah[(f"S-NIAH-{m.group(1)}", int(m.group(2)))] = value
        else:
            other[name] = value
    blocks = []
    if val:
        lines = ["validation (held-out set)", f"{'length':>8} {'loss':>9} {'ppl':>11} {'tokens':>9}"]
        lines += [f"{factor:>8} {v['loss']:>9.4f} {v['ppl']:>11.3f} {int(v['tokens']):>9}" for factor, v in val.items()]
        blocks.append(lines)
    if mqar:
        blocks.append(_grid("MQAR accuracy (rows: kv pairs, columns: sequence length)", mqar, "kv"))
    if niah:
        blocks.append(_grid("S-NIAH accuracy (columns: prompt length in tokens)", niah, "task"))
    if other:
        width = max(len(name) for name in other)
        blocks.append(["other metrics"] + [f"{name:<{width}} {value:.4f}" for name, value in other.items()])
    return "\n\n".join("\n".join(lines) for lines in blocks)
