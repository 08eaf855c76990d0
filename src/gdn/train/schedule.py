"""Learning-rate schedules as multipliers of the peak rate, a pure function of the step (nothing to checkpoint)."""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class WarmupCosine:
    """Linear warm-up over `warmup_steps`, then a half cosine from 1 down to `min_lr_ratio` at `total_steps`."""

    warmup_steps: int
    min_lr_ratio: float = 0.1

    def __call__(self, step: int, total_steps: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        decay_steps = max(1, total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine


@dataclass(frozen=True)
class WarmupConstant:
    """Linear warm-up over `warmup_steps`, then the peak rate."""

    warmup_steps: int

    def __call__(self, step: int, total_steps: int) -> float:
        return min(1.0, (step + 1) / max(1, self.warmup_steps))
