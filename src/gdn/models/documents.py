"""Packed batches: several documents laid end to end in one row, delimited by cu_seqlens ([N+1], 0 ... T)."""
from __future__ import annotations

import torch


def check_packed(x: torch.Tensor, cu_seqlens: torch.Tensor | None) -> None:
    """A packed batch is one row [1, T, ...]. (The values of cu_seqlens are not read: that would sync the GPU.)"""
    if cu_seqlens is not None and x.shape[0] != 1:
        raise ValueError(f"cu_seqlens needs batch size 1 (flatten the batch first), got {x.shape[0]}")


def document_ids(cu_seqlens: torch.Tensor, length: int) -> torch.Tensor:
    """[T] index of the document each token belongs to: the number of document starts at or before it, minus one."""
    tokens = torch.arange(length, device=cu_seqlens.device, dtype=cu_seqlens.dtype)
    # Over all of cu_seqlens, not the slice cu_seqlens[1:]: torch.compile (2.11) on CUDA searches a sliced tensor
    # from the wrong offset and returns every index one too high (pytorch#160964; benchmarks/backend_probe.py).
    return torch.searchsorted(cu_seqlens, tokens, right=True) - 1


def positions_in_documents(cu_seqlens: torch.Tensor, length: int) -> torch.Tensor:
    """[T] position of each token inside its own document (restarting at 0 at every document)."""
    tokens = torch.arange(length, device=cu_seqlens.device)
    return tokens - cu_seqlens.long()[document_ids(cu_seqlens, length)]
