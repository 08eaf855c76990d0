"""RMSNorm and the gated per-head RMSNorm at the output of the GDN mixer. Statistics are taken in float32.

RMSNorm's backward keeps only its input (in the input's dtype) and the per-row 1/rms, recomputing the normalised
rows, where autograd would keep two float32 copies of every row: 24 KB less per token and block at d_model 2048."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gdn.kernels import gated_rms_norm, rms_norm


class RMSNormFunction(torch.autograd.Function):
    """y = x * r * w with r = 1 / sqrt(mean(x^2) + eps), in float32 (float64 for float64 x); y in x's dtype."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        wide = x.to(torch.promote_types(x.dtype, torch.float32))
        rstd = torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, weight, rstd)
        return (wide * rstd * weight.to(wide.dtype)).to(x.dtype)

    @staticmethod
    def backward(ctx, dy):
        x, weight, rstd = ctx.saved_tensors
        wide = x.to(rstd.dtype)
        x_hat = wide * rstd
        dy = dy.to(rstd.dtype)
        dx_hat = dy * weight.to(rstd.dtype)
        # d/dx of x_hat = x r: dx = r (dx_hat - x_hat mean(dx_hat o x_hat))
        dx = rstd * (dx_hat - x_hat * (dx_hat * x_hat).mean(-1, keepdim=True))
        dweight = (dy * x_hat).reshape(-1, x.shape[-1]).sum(0)
        return dx.to(x.dtype), dweight.to(weight.dtype), None


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * w over the last dimension."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda and x.dtype != torch.float64:
            # Triton: one pass each way, the same quantities kept; a torch op that torch.compile leaves as it is.
            # Compiled by Inductor on CUDA (torch 2.11), RMSNormFunction's backward returns zero gradients
            # (benchmarks/backend_probe.py --localize): it never runs under torch.compile on the GPU.
            return rms_norm(x, self.weight, self.eps)
        return RMSNormFunction.apply(x, self.weight, self.eps)


class GatedRMSNorm(RMSNorm):
    """y = RMSNorm(x) * w * SiLU(gate): applied per head (dim = the head's value dim, weight shared by heads)."""

    def forward(self, x: torch.Tensor, gate: torch.Tensor, triton: bool = False) -> torch.Tensor:
        if triton:
            return gated_rms_norm(x, gate, self.weight, self.eps)  # one fused kernel, fp32 statistics
        return super().forward(x) * F.silu(gate)
