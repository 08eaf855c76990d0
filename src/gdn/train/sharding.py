"""Each data-parallel rank trains on its own contiguous slice of rows of the global batch.

The global batch is what one process would train on (data.batch_size rows), so a run gives the same batches at any
world size; rank r of W takes rows [r B / W, (r + 1) B / W).
"""
from __future__ import annotations

import torch

from gdn.data import Batch


def shard_rows(batch: Batch, rank: int, world_size: int) -> Batch:
    """Rows of `batch` for `rank`; cu_seqlens is cut to the slice (every row starts a document, so the slice
    boundaries are document boundaries) and shifted to start at 0."""
    if world_size == 1:
        return batch
    rows, seq_len = batch.input_ids.shape
    if rows % world_size:
        raise ValueError(f"the global batch has {rows} rows, not divisible by the {world_size} data-parallel ranks; "
                         f"set data.batch_size to a multiple of {world_size}")
    per_rank = rows // world_size
    start, stop = rank * per_rank, (rank + 1) * per_rank
    cu_seqlens = None
    if batch.cu_seqlens is not None:
        first, last = start * seq_len, stop * seq_len
        inside = batch.cu_seqlens[(batch.cu_seqlens >= first) & (batch.cu_seqlens <= last)]
        if inside[0] != first or inside[-1] != last:
            raise ValueError("cu_seqlens must mark a document start at every row start to shard rows over ranks")
        cu_seqlens = (inside - first).to(torch.int32)
    return Batch(batch.input_ids[start:stop], batch.labels[start:stop], cu_seqlens)


def rank_batch(data, index: int, rank: int, world_size: int) -> Batch:
    """This rank's rows of global micro-batch `index`: read alone where the data module can (`train_rows`, e.g.
    TokenData), else cut from the whole global batch."""
    train_rows = getattr(data, "train_rows", None)
    if train_rows is not None:
        return train_rows(index, rank, world_size)
    return shard_rows(data.train_batch(index), rank, world_size)
