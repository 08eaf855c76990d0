"""SwiGLU feed-forward: down(SiLU(gate(x)) * up(x)), no biases."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def default_hidden_size(d_model: int) -> int:
    """8/3 * d_model rounded up to a multiple of 256 (keeps the parameter count of a 4x GELU MLP)."""
    return 256 * math.ceil(8 * d_model / 3 / 256)


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, hidden_size: int | None = None):
        super().__init__()
        hidden_size = hidden_size or default_hidden_size(d_model)
        self.gate_proj = nn.Linear(d_model, hidden_size, bias=False)
        self.up_proj = nn.Linear(d_model, hidden_size, bias=False)
        self.down_proj = nn.Linear(hidden_size, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
