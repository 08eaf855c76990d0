"""SwiGLU feed-forward: down(SiLU(gate(x)) * up(x)), no biases.

The product SiLU(gate) * up and the down projection are one autograd function that keeps only gate and up for the
backward and recomputes the product there; autograd would also keep SiLU(gate) and the product, two more
[tokens, hidden] tensors (22 KB per token and block at hidden 5632 in bf16)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gdn.kernels.swiglu import swiglu_backward, swiglu_forward


def default_hidden_size(d_model: int) -> int:
    """8/3 * d_model rounded up to a multiple of 256 (keeps the parameter count of a 4x GELU MLP)."""
    return 256 * math.ceil(8 * d_model / 3 / 256)


class GatedDown(torch.autograd.Function):
    """y = (SiLU(gate) o up) W^T, computed in gate's dtype (bf16 under autocast, as nn.Linear would be); the
    element-wise part in one Triton kernel each way when `triton` (CUDA tensors), else in PyTorch."""

    @staticmethod
    def forward(ctx, gate, up, weight, triton):
        ctx.save_for_backward(gate, up, weight)
        ctx.triton = triton
        hidden = swiglu_forward(gate, up) if triton else F.silu(gate) * up
        return F.linear(hidden, weight.to(gate.dtype))

    @staticmethod
    def backward(ctx, dy):
        gate, up, weight = ctx.saved_tensors
        dy = dy.to(gate.dtype)
        dhidden = dy @ weight.to(gate.dtype)
        if ctx.triton:
            hidden, dgate, dup = swiglu_backward(gate, up, dhidden)
        else:
            sig = torch.sigmoid(gate.float())
            silu = gate.float() * sig
            hidden = (silu * up.float()).to(gate.dtype)
            dgate = (dhidden.float() * up.float() * sig * (1 + gate.float() * (1 - sig))).to(gate.dtype)  # SiLU'
            dup = (dhidden.float() * silu).to(up.dtype)
        dweight = dy.flatten(0, -2).t() @ hidden.flatten(0, -2)
        return dgate, dup, dweight.to(weight.dtype), None


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, hidden_size: int | None = None):
        super().__init__()
        hidden_size = hidden_size or default_hidden_size(d_model)
        self.gate_proj = nn.Linear(d_model, hidden_size, bias=False)
        self.up_proj = nn.Linear(d_model, hidden_size, bias=False)
        self.down_proj = nn.Linear(hidden_size, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the Triton kernels in eager mode on CUDA; under torch.compile the PyTorch path, which Inductor fuses
        triton = x.is_cuda and not torch.compiler.is_compiling()
        return GatedDown.apply(self.gate_proj(x), self.up_proj(x), self.down_proj.weight, triton)
