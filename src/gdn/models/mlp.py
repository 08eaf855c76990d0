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
from gdn.models.fused_linear import fused_linear


def default_hidden_size(d_model: int) -> int:
    """8/3 * d_model rounded up to a multiple of 256 (keeps the parameter count of a 4x GELU MLP)."""
    return 256 * math.ceil(8 * d_model / 3 / 256)


class GatedDown(torch.autograd.Function):
    """y = (SiLU(gate) o up) W^T from gate_up [..., 2H] (gate, then up), computed in gate_up's dtype (bf16 under
    autocast, as nn.Linear would be); the element-wise part in one Triton kernel each way when `triton` (CUDA
    tensors), else in PyTorch. The gradient is d gate_up, the joined projection's output gradient."""

    @staticmethod
    def forward(ctx, gate_up, weight, triton):
        ctx.save_for_backward(gate_up, weight)
        ctx.triton = triton
        if triton:
            hidden = swiglu_forward(gate_up)
        else:
            gate, up = gate_up.chunk(2, dim=-1)
            hidden = F.silu(gate) * up
        return F.linear(hidden, weight.to(gate_up.dtype))

    @staticmethod
    def backward(ctx, dy):
        gate_up, weight = ctx.saved_tensors
        dy = dy.to(gate_up.dtype)
        dhidden = dy @ weight.to(gate_up.dtype)
        if ctx.triton:
            hidden, dgate_up = swiglu_backward(gate_up, dhidden)
        else:
            gate, up = (t.float() for t in gate_up.chunk(2, dim=-1))
            sig = torch.sigmoid(gate)
            silu = gate * sig
            hidden = (silu * up).to(gate_up.dtype)
            dgate = dhidden.float() * up * sig * (1 + gate * (1 - sig))  # SiLU'
            dgate_up = torch.cat([dgate, dhidden.float() * silu], dim=-1).to(gate_up.dtype)
        dweight = dy.flatten(0, -2).t() @ hidden.flatten(0, -2)
        return dgate_up, dweight.to(weight.dtype), None


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, hidden_size: int | None = None):
        super().__init__()
        hidden_size = hidden_size or default_hidden_size(d_model)
        self.gate_proj = nn.Linear(d_model, hidden_size, bias=False)
        self.up_proj = nn.Linear(d_model, hidden_size, bias=False)
        self.down_proj = nn.Linear(hidden_size, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the gate and up projections as one GEMM (fused_linear); the Triton kernels in eager mode on CUDA, under
        # torch.compile the PyTorch path, which Inductor fuses with its neighbours
        triton = x.is_cuda and not torch.compiler.is_compiling()
        return GatedDown.apply(fused_linear(x, (self.gate_proj, self.up_proj)), self.down_proj.weight, triton)
