"""The SSD's element-wise parts around the chunk kernels, one Triton pass each (rows r = (b, t, h), P values a row):
    forward    V = dt o x                      (the chunk kernels' values)
               y = O + D x                     (the skip connection)
    backward   dx = dt dV + D dy,   ddt_r = sum_p dV x,   sD_r = sum_p dy x   (dD = sum of sD over rows of a head)
               dB, dC = the per-head gradients of the chunk kernels summed over each group's heads
dt, D and the per-row sums in fp32; V, y and dx in x's dtype.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from gdn.kernels.gated_delta._common import new_buffer

TILE_ELEMENTS = 4096


@triton.jit
def _tile(pid, R, P, BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr):
    rows = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_P)
    mask = (rows < R)[:, None] & (cols < P)[None, :]
    return rows, rows.to(tl.int64)[:, None] * P + cols[None, :], mask


@triton.jit
def _values_kernel(x_ptr, dt_ptr, v_ptr, R, P, BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr):
    rows, offs, mask = _tile(tl.program_id(0), R, P, BLOCK_R, BLOCK_P)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    dt = tl.load(dt_ptr + rows, mask=rows < R, other=0.0)
    tl.store(v_ptr + offs, (x * dt[:, None]).to(v_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _skip_kernel(o_ptr, x_ptr, D_ptr, y_ptr, R, H, P, BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr):
    rows, offs, mask = _tile(tl.program_id(0), R, P, BLOCK_R, BLOCK_P)
    o = tl.load(o_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    D = tl.load(D_ptr + rows % H, mask=rows < R, other=0.0)
    tl.store(y_ptr + offs, (o + D[:, None] * x).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _backward_kernel(x_ptr, dt_ptr, D_ptr, dy_ptr, dv_ptr, dx_ptr, ddt_ptr, sD_ptr, R, H, P,
                     BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr, HAS_D: tl.constexpr):
    rows, offs, mask = _tile(tl.program_id(0), R, P, BLOCK_R, BLOCK_P)
    row_mask = rows < R
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    dv = tl.load(dv_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    dt = tl.load(dt_ptr + rows, mask=row_mask, other=0.0)
    dx = dv * dt[:, None]
    tl.store(ddt_ptr + rows, tl.sum(dv * x, axis=1), mask=row_mask)
    if HAS_D:
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        D = tl.load(D_ptr + rows % H, mask=row_mask, other=0.0)
        dx += D[:, None] * dy
        tl.store(sD_ptr + rows, tl.sum(dy * x, axis=1), mask=row_mask)
    tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)


def _launch(R: int, P: int):
    block_p = triton.next_power_of_2(P)
    block_r = max(1, TILE_ELEMENTS // block_p)
    return (triton.cdiv(R, block_r),), dict(BLOCK_R=block_r, BLOCK_P=block_p)


def ssd_values(x: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
    """x [..., P] (rows r), dt [...] fp32 -> V = dt o x in x's dtype; contiguous inputs."""
    P = x.shape[-1]
    v = new_buffer(x.shape, x.dtype, x.device)
    grid, blocks = _launch(dt.numel(), P)
    _values_kernel[grid](x, dt, v, dt.numel(), P, **blocks)
    return v


def ssd_skip(o: torch.Tensor, x: torch.Tensor, D: torch.Tensor) -> torch.Tensor:
    """y = O + D x with D [H] per head (x [B, T, H, P]); y in x's dtype."""
    B, T, H, P = x.shape
    y = new_buffer(x.shape, x.dtype, x.device)
    grid, blocks = _launch(B * T * H, P)
    _skip_kernel[grid](o, x, D, y, B * T * H, H, P, **blocks)
    return y


def ssd_elementwise_backward(x, dt, D, dy, dv):
    """-> dx (x's dtype), ddt [B, T, H] fp32, dD [H] fp32 (None without D)."""
    B, T, H, P = x.shape
    R = B * T * H
    dx = new_buffer(x.shape, x.dtype, x.device)
    ddt = new_buffer(dt.shape, torch.float32, x.device)
    sD = new_buffer(dt.shape, torch.float32, x.device) if D is not None else None
    grid, blocks = _launch(R, P)
    _backward_kernel[grid](x, dt, x if D is None else D, dy, dv, dx, ddt, ddt if sD is None else sD, R, H, P,
                           HAS_D=D is not None, **blocks)
    return dx, ddt, None if sD is None else sD.reshape(-1, H).sum(0)
