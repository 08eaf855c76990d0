"""Where the sequences of a batch lie: shared by the float64 oracles and the PyTorch paths of every operator."""
from __future__ import annotations

import torch


def sequence_bounds(cu_seqlens: torch.Tensor | None, batch: int, length: int) -> list[tuple[int, int, int]]:
    """(batch row, start, end) of every sequence: one per row, or one per cu_seqlens segment of row 0."""
    if cu_seqlens is None:
        return [(b, 0, length) for b in range(batch)]
    bounds = cu_seqlens.tolist()
    return [(0, bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
