"""Group a sweep's finished runs into variants: runs that differ only in their seed.

A variant is named by the overrides that differ between the runs (seed excluded): the model alone in `baselines`
(-> "gdn"), the ablation choice in `gdn_ablation` (-> "no_gate"), "gdn lr=0.001" in `lr`. Keys are shortened to
their last component, without Hydra's +/++ prefix.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from gdn.dashboard.run_names import short_key
from gdn.report.collect import RunRecord

SEED_KEY = "seed"


@dataclass
class Variant:
    label: str
    runs: list[RunRecord]  # finished runs only, one per seed

    @property
    def architecture(self) -> str:
        return self.runs[0].architecture

    def values(self, metric: str, history_median: bool = False) -> list[float]:
        """The metric of each run that has it: its latest value, or the median over its history (rates)."""
        out = []
        for run in self.runs:
            history = run.histories.get(metric)
            if history_median and history:
                out.append(statistics.median(history.values()))
            elif metric in run.metrics:
                out.append(run.metrics[metric])
        return out

    def param(self, name: str) -> str | None:
        return self.runs[0].params.get(name)


def varying_keys(runs: list[RunRecord]) -> list[str]:
    """Override keys whose value differs between runs (seed excluded), in first-seen order."""
    keys: dict[str, None] = {}
    for run in runs:
        keys.update(dict.fromkeys(run.overrides()))
    keys.pop(SEED_KEY, None)
    return [k for k in keys if len({run.overrides().get(k) for run in runs}) > 1]


def label_of(run: RunRecord, keys: list[str]) -> str:
    if not keys:
        return run.architecture
    overrides = run.overrides()
    if len(keys) == 1:
        return overrides.get(keys[0], "-")
    parts = [overrides.get(k, "-") if k == "model" else f"{short_key(k)}={overrides.get(k, '-')}" for k in keys]
    return " ".join(parts)


def group_variants(runs: list[RunRecord]) -> list[Variant]:
    """Finished runs grouped by label, in the order the sweep ran them."""
    finished = [run for run in runs if run.status == "FINISHED"]
    keys = varying_keys(finished)
    groups: dict[str, list[RunRecord]] = {}
    for run in finished:
        groups.setdefault(label_of(run, keys), []).append(run)
    return [Variant(label, members) for label, members in groups.items()]
