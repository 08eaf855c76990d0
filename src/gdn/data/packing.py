"""Packing documents into fixed-length rows, and rows into Batches that keep document boundaries.

The token stream is every document followed by the end-of-document token, back to back, padded with PAD at
the end so that it splits into rows of seq_len + 1 tokens with a stride of seq_len: row r is
stream[r * seq_len : (r + 1) * seq_len + 1], its inputs the first seq_len tokens and its labels the last
seq_len. Neighbouring rows share one token, so every token but the first is a label exactly once.
"""
from collections.abc import Iterable

import numpy as np
import torch

from gdn.data.batch import IGNORE_INDEX, Batch

PAD = -1  # fills the end of the stream; stored only, never shown to the model


def token_stream(encoded_batches: Iterable[list[list[int]]], end_of_document: int, seq_len: int) -> np.ndarray:
    """int32 stream of the documents, each followed by end_of_document, padded to num_rows * seq_len + 1."""
    parts = [
        np.fromiter((token for ids in batch for token in (*ids, end_of_document)), dtype=np.int32)
        for batch in encoded_batches
    ]
    stream = np.concatenate([np.zeros(0, dtype=np.int32), *parts])
    num_rows = max(0, -(-(len(stream) - 1) // seq_len))  # ceil
    padding = num_rows * seq_len + 1 - len(stream)
    return np.concatenate([stream, np.full(padding, PAD, dtype=np.int32)])


def num_rows(stream: np.ndarray, seq_len: int) -> int:
    return (len(stream) - 1) // seq_len


def rows(stream: np.ndarray, seq_len: int, row_ids: Iterable[int]) -> torch.Tensor:
    """[len(row_ids), seq_len + 1] long: the packed rows `row_ids` of the stream."""
    picked = [stream[r * seq_len : (r + 1) * seq_len + 1] for r in row_ids]
    return torch.from_numpy(np.stack(picked).astype(np.int64))


def batch_from_rows(packed_rows: torch.Tensor, end_of_document: int) -> Batch:
    """Inputs, next-token labels and cu_seqlens over the flattened B * seq_len inputs.

    A document starts at every row start and right after every end-of-document token (padding follows the
    last one, so it forms a segment of its own). Labels are IGNORE_INDEX where the next token starts another
    document and on padding.
    """
    inputs, targets = packed_rows[:, :-1], packed_rows[:, 1:]
    labels = targets.masked_fill((inputs == end_of_document) | (targets == PAD), IGNORE_INDEX)

    starts = torch.ones_like(inputs, dtype=torch.bool)
    starts[:, 1:] = inputs[:, :-1] == end_of_document
    cu_seqlens = torch.cat([starts.flatten().nonzero().flatten(), torch.tensor([inputs.numel()])])

    input_ids = inputs.masked_fill(inputs == PAD, end_of_document)  # any valid id: padding is never a label
    return Batch(input_ids, labels, cu_seqlens.to(torch.int32))


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
