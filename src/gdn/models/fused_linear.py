"""Several linear layers that read the same input, computed as one GEMM.

Each layer keeps its own parameters (names, initialisation and checkpoints stay those of separate nn.Linear
layers); only the computation is joined: the weights (and biases) are concatenated along the output dimension, one
GEMM runs, and its output is split. One launch instead of one per layer in the forward, and in the backward two
GEMMs (input and weight gradients) instead of two per layer plus the sum of the input gradients. Under
torch.compile the concatenation fuses with the cast that autocast applies to the weights anyway.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def fused_linear(x: torch.Tensor, layers: Sequence[nn.Linear]) -> torch.Tensor:
    """torch.cat([layer(x) for layer in layers], -1), by one GEMM: [..., sum of out_features]; split it with
    .split([layer.out_features ...], -1)."""
    weight = torch.cat([layer.weight for layer in layers])
    bias = None
    if any(layer.bias is not None for layer in layers):
        bias = torch.cat([layer.bias if layer.bias is not None else layer.weight.new_zeros(layer.out_features)
                          for layer in layers])
    return F.linear(x, weight, bias)
