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
def packed_as_rows(
    run: Callable[..., tuple[torch.Tensor, torch.Tensor]], tensors: Sequence[torch.Tensor],
    initial_state: torch.Tensor | None, cu_seqlens: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """run(*rows, initial_state) once over the packed sequences of cu_seqlens laid out as rows: each tensor
    [1, T, ...] becomes [N, L, ...], sequence n's tokens at the start of row n and zeros after them (L the longest
    sequence). Returns the outputs packed back to [1, T, ...] and run's final states [N, ...].

    run must leave a row's state as it is over trailing zero tokens, so that each row's final state is its
    sequence's: true of every caller, whose zero tokens have no key, value or step (k = v = 0, beta = dt = 0) and no
    decay (log decay 0). One batched call, not a loop over sequences: the PyTorch gated delta rule took 14 s a
    training step on an H200 with one call per document (16 x 2048 tokens of source files).

    Eager under torch.compile: traced, it would compile anew for every batch's document lengths."""
    spans = sequence_bounds(cu_seqlens, 1, 0)
    starts, lengths = [start for _, start, _ in spans], [end - start for _, start, end in spans]
    total, longest = tensors[0].shape[1], max(lengths, default=0)
    device = tensors[0].device
    offsets = torch.arange(longest, device=device)
    starts_t, lengths_t = (torch.tensor(x, device=device)[:, None] for x in (starts, lengths))
    valid = offsets < lengths_t  # [N, L]
    index = torch.where(valid, starts_t + offsets, total)  # token `total` is the zero appended below
    rows = [torch.cat([t[0], t.new_zeros(1, *t.shape[2:])])[index] for t in tensors]
    out, final = run(*rows, initial_state)
    return out[valid].unsqueeze(0), final
