"""Where the sequences of a batch lie: shared by the float64 oracles and the PyTorch paths of every operator."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def sequence_bounds(cu_seqlens: torch.Tensor | None, batch: int, length: int) -> list[tuple[int, int, int]]:
    """(batch row, start, end) of every sequence: one per row, or one per cu_seqlens segment of row 0."""
    if cu_seqlens is None:
        return [(b, 0, length) for b in range(batch)]
    bounds = cu_seqlens.tolist()
    return [(0, bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


@torch.compiler.disable
def each_sequence(
    run: Callable[..., tuple[torch.Tensor, torch.Tensor]], tensors: Sequence[torch.Tensor],
    initial_state: torch.Tensor | None, cu_seqlens: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """run(*pieces, state) on every sequence of cu_seqlens (the pieces: each tensor's tokens [:, start:end] of row
    0; state: the sequence's row of initial_state, or None), concatenating the outputs on the token axis and the
    final states on axis 0.

    Eager under torch.compile: traced, the loop over sequences (and each one's loop over chunks) would compile anew
    for every batch's document lengths. For the PyTorch gated delta rule on the CPU, the first batch alone took
    123 s to compile for one layer at T = 512, and each new set of lengths compiled again."""
    outputs, finals = [], []
    for n, (_, start, end) in enumerate(sequence_bounds(cu_seqlens, 1, 0)):
        state = None if initial_state is None else initial_state[n : n + 1]
        out, final = run(*(t[:, start:end] for t in tensors), state)
        outputs.append(out)
        finals.append(final)
    return torch.cat(outputs, dim=1), torch.cat(finals, dim=0)
