"""RMSNorm and gated RMSNorm in Triton: y = x * rstd * weight [* SiLU(gate)], rstd = 1 / sqrt(mean(x^2) + eps),
in fp32. The plain norm is the same kernels without the gate (HAS_GATE=False: SiLU(gate) taken as 1).

Rows are vectors of the last dim (x flattened to [M, D]); one tile holds BLOCK_M whole rows. Backward, with
xhat = x * rstd, s = sigmoid(gate) and u = dy * weight * gate * s (the gradient reaching xhat):
    dx      = rstd * (u - xhat * mean(u * xhat))      (RMSNorm's Jacobian; rstd is recomputed, never stored)
    dgate   = dy * weight * xhat * s * (1 + gate * (1 - s))
    dweight = sum over rows of dy * xhat * gate * s
The backward keeps only x (and gate) in their own dtype: nothing in fp32 per element.

GATE_FIRST (Mamba2's RMSNormGated with norm_before_gate=False): y = RMSNorm(x * SiLU(gate)) * weight. With
xg = x * SiLU(gate), xhat = xg * rstd and u = dy * weight:
    dxg = rstd * (u - xhat * mean(u * xhat)),   dx = dxg * SiLU(gate),   dgate = dxg * x * s * (1 + gate * (1 - s))
    dweight = sum over rows of dy * xhat
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

TILE_ELEMENTS = 4096  # BLOCK_M * BLOCK_D per forward tile; half that in backward
BWD_TILES_PER_PROGRAM = 8  # row tiles one backward program walks, so weight-gradient partials stay few


@triton.jit
def _load_tile(x_ptr, gate_ptr, rows, cols, mask, D, HAS_GATE: tl.constexpr):
    offsets = rows.to(tl.int64)[:, None] * D + cols[None, :]
    x = tl.load(x_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    if HAS_GATE:
        gate = tl.load(gate_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    else:
        gate = x  # unused
    return offsets, x, gate


@triton.jit
def _gated_rms_norm_fwd_kernel(x_ptr, gate_ptr, weight_ptr, y_ptr, num_rows, D, eps,
                               BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, HAS_GATE: tl.constexpr,
                               GATE_FIRST: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    mask = (rows < num_rows)[:, None] & (cols < D)[None, :]
    offsets, x, gate = _load_tile(x_ptr, gate_ptr, rows, cols, mask, D, HAS_GATE)
    weight = tl.load(weight_ptr + cols, mask=cols < D, other=0.0).to(tl.float32)
    if GATE_FIRST:
        x = x * gate * tl.sigmoid(gate)
    rstd = tl.rsqrt(tl.sum(x * x, axis=1) / D + eps)
    y = x * rstd[:, None] * weight[None, :]
    if HAS_GATE and not GATE_FIRST:
        y = y * gate * tl.sigmoid(gate)
    tl.store(y_ptr + offsets, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _gated_rms_norm_bwd_kernel(x_ptr, gate_ptr, weight_ptr, dy_ptr, dx_ptr, dgate_ptr, dweight_part_ptr,
                               num_rows, D, eps, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
                               TILES_PER_PROGRAM: tl.constexpr, HAS_GATE: tl.constexpr, GATE_FIRST: tl.constexpr):
    """dx and dgate for TILES_PER_PROGRAM row tiles, plus this program's partial sum of dweight [D]."""
    part = tl.program_id(0)
    cols = tl.arange(0, BLOCK_D)
    weight = tl.load(weight_ptr + cols, mask=cols < D, other=0.0).to(tl.float32)
    dweight = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for tile in range(TILES_PER_PROGRAM):
        rows = (part * TILES_PER_PROGRAM + tile) * BLOCK_M + tl.arange(0, BLOCK_M)
        mask = (rows < num_rows)[:, None] & (cols < D)[None, :]
        offsets, x, gate = _load_tile(x_ptr, gate_ptr, rows, cols, mask, D, HAS_GATE)
        dy = tl.load(dy_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        if GATE_FIRST:  # the normalised rows are xg = x * SiLU(gate)
            sig = tl.sigmoid(gate)
            silu = gate * sig
            x_in = x * silu
        else:
            x_in = x
        rstd = tl.rsqrt(tl.sum(x_in * x_in, axis=1) / D + eps)
        xhat = x_in * rstd[:, None]
        if HAS_GATE and not GATE_FIRST:  # the gradient reaching xhat * weight
            sig = tl.sigmoid(gate)
            dy_gated = dy * gate * sig
            dgate = dy * weight[None, :] * xhat * sig * (1.0 + gate * (1.0 - sig))
            tl.store(dgate_ptr + offsets, dgate.to(dgate_ptr.dtype.element_ty), mask=mask)
        else:
            dy_gated = dy
        u = dy_gated * weight[None, :]
        dx_in = rstd[:, None] * (u - xhat * (tl.sum(u * xhat, axis=1) / D)[:, None])
        if GATE_FIRST:
            dgate = dx_in * x * sig * (1.0 + gate * (1.0 - sig))
            tl.store(dgate_ptr + offsets, dgate.to(dgate_ptr.dtype.element_ty), mask=mask)
            dx_in = dx_in * silu
        tl.store(dx_ptr + offsets, dx_in.to(dx_ptr.dtype.element_ty), mask=mask)
        dweight += tl.sum(dy_gated * xhat, axis=0)
    tl.store(dweight_part_ptr + part.to(tl.int64) * D + cols, dweight, mask=cols < D)


def _block_sizes(D: int, tile_elements: int) -> tuple[int, int]:
    block_d = triton.next_power_of_2(D)
    return max(1, tile_elements // block_d), block_d


# torch.library custom ops (see gdn/kernels/gated_delta/chunk.py for why): opaque to torch.compile, and visible to
# op-level selective checkpointing as torch.ops.gdn.gated_rms_norm_fwd.default. gate None: the plain RMSNorm;
# gate_first: RMSNorm(x * SiLU(gate)) * weight. A custom op cannot return None: no gate gives an empty dgate.
@torch.library.custom_op("gdn::gated_rms_norm_fwd", mutates_args=())
def gated_rms_norm_fwd(x: torch.Tensor, gate: torch.Tensor | None, weight: torch.Tensor, eps: float,
                       gate_first: bool) -> torch.Tensor:
    D = x.shape[-1]
    x2d = x.reshape(-1, D).contiguous()
    gate2d = gate.reshape(-1, D).contiguous() if gate is not None else None
    num_rows = x2d.shape[0]
    y = torch.empty_like(x2d)
    block_m, block_d = _block_sizes(D, TILE_ELEMENTS)
    _gated_rms_norm_fwd_kernel[(triton.cdiv(num_rows, block_m),)](
        x2d, x2d if gate2d is None else gate2d, weight, y, num_rows, D, eps,  # x2d: a pointer never read
        BLOCK_M=block_m, BLOCK_D=block_d, HAS_GATE=gate2d is not None, GATE_FIRST=gate_first,
    )
    return y.view(x.shape)


@gated_rms_norm_fwd.register_fake
def _(x, gate, weight, eps, gate_first):
    return x.new_empty(x.shape)


@torch.library.custom_op("gdn::gated_rms_norm_bwd", mutates_args=())
def gated_rms_norm_bwd(x: torch.Tensor, gate: torch.Tensor | None, weight: torch.Tensor, eps: float,
                       gate_first: bool, dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    D = x.shape[-1]
    x2d = x.reshape(-1, D).contiguous()
    gate2d = gate.reshape(-1, D).contiguous() if gate is not None else None
    num_rows = x2d.shape[0]
    block_m, block_d = _block_sizes(D, TILE_ELEMENTS // 2)
    num_parts = triton.cdiv(num_rows, block_m * BWD_TILES_PER_PROGRAM)
    dx = torch.empty_like(x2d)
    dgate = torch.empty_like(gate2d) if gate2d is not None else x.new_empty((0,))
    dweight_parts = torch.empty(num_parts, D, device=x2d.device, dtype=torch.float32)
    _gated_rms_norm_bwd_kernel[(num_parts,)](
        x2d, x2d if gate2d is None else gate2d, weight, dy.reshape(-1, D).contiguous(), dx,
        dx if gate2d is None else dgate, dweight_parts, num_rows, D, eps,
        BLOCK_M=block_m, BLOCK_D=block_d, TILES_PER_PROGRAM=BWD_TILES_PER_PROGRAM, HAS_GATE=gate2d is not None,
        GATE_FIRST=gate_first,
    )
    dgate = dgate.view(x.shape) if gate2d is not None else dgate
    return dx.view(x.shape), dgate, dweight_parts.sum(0).to(weight.dtype)


@gated_rms_norm_bwd.register_fake
def _(x, gate, weight, eps, gate_first, dy):
    return x.new_empty(x.shape), x.new_empty(x.shape if gate is not None else (0,)), torch.empty_like(weight)


def _norm_setup_context(ctx, inputs, output):
    x, gate, weight, eps, gate_first = inputs
    ctx.save_for_backward(x, gate, weight)
    ctx.eps, ctx.gate_first = eps, gate_first


def _norm_backward(ctx, dy):
    x, gate, weight = ctx.saved_tensors
    dx, dgate, dweight = gated_rms_norm_bwd(x, gate, weight, ctx.eps, ctx.gate_first, dy)
    return dx, dgate if gate is not None else None, dweight, None, None


gated_rms_norm_fwd.register_autograd(_norm_backward, setup_context=_norm_setup_context)


def gated_rms_norm(x: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5,
                   norm_before_gate: bool = True) -> torch.Tensor:
    """RMSNorm(x) * weight * SiLU(gate) over the last dim, computed in fp32; x, gate [..., H, D], weight [D].
    norm_before_gate=False: RMSNorm(x * SiLU(gate)) * weight (Mamba2's order).

    Returns x's dtype; differentiable in x, gate and weight.
    """
    if gate.shape != x.shape:
        raise ValueError(f"gated_rms_norm needs gate shaped like x {tuple(x.shape)}, got {tuple(gate.shape)}")
    if weight.shape != x.shape[-1:]:
        raise ValueError(f"gated_rms_norm needs weight [{x.shape[-1]}], got {tuple(weight.shape)}")
    return gated_rms_norm_fwd(x, gate, weight.contiguous(), float(eps), not norm_before_gate)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """RMSNorm(x) * weight over the last dim, computed in fp32; returns x's dtype; differentiable in x and weight.
    The backward keeps x only (in its own dtype)."""
    if weight.shape != x.shape[-1:]:
        raise ValueError(f"rms_norm needs weight [{x.shape[-1]}], got {tuple(weight.shape)}")
    return gated_rms_norm_fwd(x, None, weight.contiguous(), float(eps), False)
