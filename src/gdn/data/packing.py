"""Packing token windows into Batches that keep document boundaries (the one packing of data=tokens and data=text).

A window of L + 1 tokens is a row: its inputs the first L tokens, its labels the last L. Rows r of a token stream
are stream[r L : (r + 1) L + 1], so neighbouring rows share one token and every token but the first is a label once.
"""
import numpy as np
import torch

from gdn.data.batch import IGNORE_INDEX, Batch


def batch_from_windows(windows: np.ndarray, document_starts: np.ndarray) -> Batch:
    """A Batch from [B, L + 1] token windows and a [B, L + 1] mask of the positions where a document begins.

    Row b's inputs are windows[b, :L], its labels windows[b, 1:]. A label is IGNORE_INDEX where the next token
    starts another document (start p + 1); cu_seqlens marks every row start and every document start before L.
    """
    rows, length = windows.shape[0], windows.shape[1] - 1
    tokens = torch.from_numpy(windows.astype(np.int64))
    labels = tokens[:, 1:].clone()
    labels[torch.from_numpy(document_starts[:, 1:])] = IGNORE_INDEX
    bounds = document_starts[:, :length].copy()
    bounds[:, 0] = True  # every row starts a sequence
    cu_seqlens = np.append(np.flatnonzero(bounds), rows * length).astype(np.int32)
    return Batch(tokens[:, :-1].contiguous(), labels, torch.from_numpy(cu_seqlens))
