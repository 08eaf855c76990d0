"""Token-level loss and accuracy over valid positions (label != -100)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def summed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of the cross-entropy over valid tokens; the caller divides by the (global) valid-token count, so that
    micro-batches and ranks with different numbers of valid tokens weigh every token the same."""
    return F.cross_entropy(
        logits.float().flatten(0, -2), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )


def count_correct(logits: torch.Tensor, labels: torch.Tensor) -> int:
    """Number of valid positions whose arg-max prediction equals the label."""
    valid = labels != IGNORE_INDEX
    return int((logits.argmax(-1)[valid] == labels[valid]).sum())
