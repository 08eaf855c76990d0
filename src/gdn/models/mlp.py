"""SwiGLU feed-forward: down(SiLU(gate(x)) * up(x)), no biases.

The product SiLU(gate) * up and the down projection are one autograd function that keeps only gate and up for the
backward and recomputes the product there; autograd would also keep SiLU(gate) and the product, two more
[tokens, hidden] tensors (22 KB per token and block at hidden 5632 in bf16)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def default_hidden_size(d_model: int) -> int:
    """8/3 * d_model rounded up to a multiple of 256 (keeps the parameter count of a 4x GELU MLP)."""
    return 256 * math.ceil(8 * d_model / 3 / 256)


class GatedDown(torch.autograd.Function):
    """y = (SiLU(gate) o up) W^T, computed in gate's dtype (bf16 under autocast, as nn.Linear would be)."""

    @staticmethod
    def forward(ctx, gate, up, weight):
        ctx.save_for_backward(gate, up, weight)
        return F.linear(F.silu(gate) * up, weight.to(gate.dtype))

    @staticmethod
    def backward(ctx, dy):
        gate, up, weight = ctx.saved_tensors
        sig = torch.sigmoid(gate.float())
        silu = gate.float() * sig
        dy = dy.to(gate.dtype)
        dweight = dy.flatten(0, -2).t() @ (silu * up.float()).to(gate.dtype).flatten(0, -2)
        dhidden = (dy @ weight.to(gate.dtype)).float()
        dgate = dhidden * up.float() * sig * (1 + gate.float() * (1 - sig))  # SiLU'(g) = s (1 + g (1 - s))
        dup = dhidden * silu
        return dgate.to(gate.dtype), dup.to(up.dtype), dweight.to(weight.dtype)


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, hidden_size: int | None = None):
        super().__init__()
        hidden_size = hidden_size or default_hidden_size(d_model)
        self.gate_proj = nn.Linear(d_model, hidden_size, bias=False)
        self.up_proj = nn.Linear(d_model, hidden_size, bias=False)
        self.down_proj = nn.Linear(hidden_size, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return GatedDown.apply(self.gate_proj(x), self.up_proj(x), self.down_proj.weight)
