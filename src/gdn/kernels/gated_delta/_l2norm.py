"""L2 normalisation of q and k over the head dim, y = x / sqrt(sum(x^2) + eps), and its backward.

With r = 1 / sqrt(sum(x^2) + eps): dx = r (dy - y (y . dy)). The forward keeps r (fp32, one per row).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from gdn.kernels.gated_delta._common import new_buffer, pow2_at_least_16

EPS = 1e-6
_ROWS = 16  # rows per program


@triton.jit
def l2norm_forward_kernel(x_ptr, y_ptr, rstd_ptr, n_rows, D: tl.constexpr, BD: tl.constexpr, ROWS: tl.constexpr,
                          EPS: tl.constexpr):
    r = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cd = tl.arange(0, BD)
    mask = (r[:, None] < n_rows) & (cd[None, :] < D)
    x = tl.load(x_ptr + r[:, None] * D + cd[None, :], mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, 1) + EPS)
    tl.store(y_ptr + r[:, None] * D + cd[None, :], (x * rstd[:, None]).to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(rstd_ptr + r, rstd, mask=r < n_rows)


@triton.jit
def l2norm_backward_kernel(y_ptr, rstd_ptr, dy_ptr, dx_ptr, n_rows, D: tl.constexpr, BD: tl.constexpr,
                           ROWS: tl.constexpr):
    r = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    cd = tl.arange(0, BD)
    mask = (r[:, None] < n_rows) & (cd[None, :] < D)
    offs = r[:, None] * D + cd[None, :]
    y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.load(rstd_ptr + r, mask=r < n_rows, other=0.0)
    dx = rstd[:, None] * (dy - y * tl.sum(y * dy, 1)[:, None])
    tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def l2norm_forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., D] contiguous -> (normalised x in x's dtype, rstd fp32 [...])."""
    D = x.shape[-1]
    n_rows = x.numel() // D
    y = new_buffer(x.shape, x.dtype, x.device)
    rstd = new_buffer(x.shape[:-1], torch.float32, x.device)
    l2norm_forward_kernel[(triton.cdiv(n_rows, _ROWS),)](x, y, rstd, n_rows, D=D, BD=pow2_at_least_16(D),
                                                         ROWS=_ROWS, EPS=EPS)
    return y, rstd


def l2norm_backward(y: torch.Tensor, rstd: torch.Tensor, dy: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    D = y.shape[-1]
    n_rows = y.numel() // D
    dx = new_buffer(y.shape, dtype, y.device)
    l2norm_backward_kernel[(triton.cdiv(n_rows, _ROWS),)](y, rstd, dy, dx, n_rows, D=D, BD=pow2_at_least_16(D),
                                                          ROWS=_ROWS)
    return dx
