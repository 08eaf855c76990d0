"""Packing token windows into Batches that keep document boundaries (the one packing of data=tokens and data=text).

A window of L + 1 tokens is a row: its inputs the first L tokens, its labels the last L. Rows r of a token stream
are stream[r L : (r + 1) L + 1], so neighbouring rows share one token and every token but the first is a label once.
"""
import numpy as np
import torch

from gdn.data.batch import IGNORE_INDEX, Batch


def batch_from_windows(windows: np.ndarray, starts: list[np.ndarray]) -> Batch:
    """A Batch from [B, L + 1] token windows and, per row, the document starts inside it (positions in [0, L]).

    Row b's inputs are windows[b, :L], its labels windows[b, 1:]. A label is IGNORE_INDEX where the next token
    starts another document (start p + 1); cu_seqlens marks every row start and every document start before L.
    """
    rows, length = windows.shape[0], windows.shape[1] - 1
    tokens = torch.from_numpy(windows.astype(np.int64))
    labels = tokens[:, 1:].clone()
    bounds = [np.zeros(1, dtype=np.int64)]
    for b, row_starts in enumerate(starts):
        labels[b, torch.from_numpy(row_starts[row_starts > 0] - 1)] = IGNORE_INDEX
        inner = row_starts[(row_starts > 0) & (row_starts < length)]
        bounds.append(b * length + inner)
        bounds.append(np.array([(b + 1) * length]))
    cu_seqlens = torch.from_numpy(np.concatenate(bounds).astype(np.int32))
    return Batch(tokens[:, :-1].contiguous(), labels, cu_seqlens)
