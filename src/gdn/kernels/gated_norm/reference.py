"""Gated RMSNorm in plain PyTorch: the test oracle for `gated_rms_norm`, and the eager expression it replaces.

Per head vector x in R^D:  y = x / sqrt(mean(x^2) + eps) * weight * SiLU(gate)   (GDN's output norm and gate).
Computes in float32, or float64 when x is float64; returns x's dtype. Differentiable through plain autograd.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def gated_rms_norm_reference(
    x: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5, norm_before_gate: bool = True
) -> torch.Tensor:
    """x, gate [..., H, D]; weight [D]; normalised over the last dim (after the gate if not norm_before_gate)."""
    compute_dtype = torch.promote_types(x.dtype, torch.float32)
    x_c, silu = x.to(compute_dtype), F.silu(gate.to(compute_dtype))
    if not norm_before_gate:
        x_c = x_c * silu
    normed = x_c * torch.rsqrt(x_c.pow(2).mean(-1, keepdim=True) + eps) * weight.to(compute_dtype)
    return (normed * silu if norm_before_gate else normed).to(x.dtype)
