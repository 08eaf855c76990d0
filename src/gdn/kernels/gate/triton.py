"""The GDN decay gate in Triton: g = -exp(A_log) * softplus(a + dt_bias), in fp32, per head.

a is flattened to [M, H]. Backward, with z = a + dt_bias and softplus'(z) = sigmoid(z) (1 above the threshold):
    da = dg * -exp(A_log) * softplus'(z),   ddt_bias = sum over rows of da,   dA_log = sum over rows of dg * g
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

TILE_ELEMENTS = 4096  # BLOCK_M * BLOCK_H per tile
SOFTPLUS_THRESHOLD = 20.0  # softplus(z) = z above it, as in torch.nn.functional.softplus


@triton.jit
def _log1p(u):
    """log(1 + u) for u in [0, 1], with full relative precision however small u is, and in plain arithmetic, so
    alike on every backend: log(1 + u) = 2 atanh(s), s = u / (2 + u) <= 1/3, as 2 (s + s^3/3 + ... + s^17/17),
    whose first dropped term is below (1/9)^9 of the sum."""
    s = u / (2.0 + u)
    s2 = s * s
    series = tl.zeros_like(s) + 1.0 / 17.0
    for k in tl.static_range(8):
        series = series * s2 + 1.0 / (15 - 2 * k)
    return 2.0 * s * series


@triton.jit
def _softplus(z, THRESHOLD: tl.constexpr):
    """log(1 + exp(z)) as max(z, 0) + log1p(exp(-|z|)), which never overflows; z itself above THRESHOLD."""
    stable = tl.maximum(z, 0.0) + _log1p(tl.exp(-tl.abs(z)))
    return tl.where(z > THRESHOLD, z, stable)


@triton.jit
def _load_tile(a_ptr, A_log_ptr, dt_bias_ptr, pid, num_rows, H, BLOCK_M: tl.constexpr, BLOCK_H: tl.constexpr):
    """Offsets, mask, z = a + dt_bias and -exp(A_log) of one tile, in fp32."""
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    heads = tl.arange(0, BLOCK_H)
    mask = (rows < num_rows)[:, None] & (heads < H)[None, :]
    offsets = rows.to(tl.int64)[:, None] * H + heads[None, :]
    a = tl.load(a_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    dt_bias = tl.load(dt_bias_ptr + heads, mask=heads < H, other=0.0).to(tl.float32)
    decay_rate = -tl.exp(tl.load(A_log_ptr + heads, mask=heads < H, other=0.0).to(tl.float32))
    return offsets, mask, a + dt_bias[None, :], decay_rate


@triton.jit
def _gdn_gate_fwd_kernel(a_ptr, A_log_ptr, dt_bias_ptr, g_ptr, num_rows, H, THRESHOLD: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_H: tl.constexpr):
    offsets, mask, z, decay_rate = _load_tile(a_ptr, A_log_ptr, dt_bias_ptr, tl.program_id(0), num_rows, H,
                                              BLOCK_M, BLOCK_H)
    tl.store(g_ptr + offsets, decay_rate[None, :] * _softplus(z, THRESHOLD), mask=mask)


@triton.jit
def _gdn_gate_bwd_kernel(a_ptr, A_log_ptr, dt_bias_ptr, dg_ptr, da_ptr, dA_log_part_ptr, ddt_bias_part_ptr,
                         num_rows, H, THRESHOLD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_H: tl.constexpr):
    """da for one tile, plus this tile's partial sums of dA_log [H] and ddt_bias [H]."""
    pid = tl.program_id(0)
    offsets, mask, z, decay_rate = _load_tile(a_ptr, A_log_ptr, dt_bias_ptr, pid, num_rows, H, BLOCK_M, BLOCK_H)
    dg = tl.load(dg_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
    softplus_grad = tl.where(z > THRESHOLD, 1.0, tl.sigmoid(z))
    dz = dg * decay_rate[None, :] * softplus_grad
    tl.store(da_ptr + offsets, dz.to(da_ptr.dtype.element_ty), mask=mask)
    heads = tl.arange(0, BLOCK_H)
    part_offsets = pid.to(tl.int64) * H + heads
    g = decay_rate[None, :] * _softplus(z, THRESHOLD)
    tl.store(dA_log_part_ptr + part_offsets, tl.sum(dg * g, axis=0), mask=heads < H)
    tl.store(ddt_bias_part_ptr + part_offsets, tl.sum(dz, axis=0), mask=heads < H)


def _launch_shape(num_rows: int, H: int) -> tuple[int, int, int]:
    block_h = triton.next_power_of_2(H)
    block_m = max(1, TILE_ELEMENTS // block_h)
    return triton.cdiv(num_rows, block_m), block_m, block_h


# torch.library custom ops (see gdn/kernels/gated_delta/chunk.py for why): opaque to torch.compile, and visible to
# op-level selective checkpointing as torch.ops.gdn.gate_fwd.default.
@torch.library.custom_op("gdn::gate_fwd", mutates_args=())
def gate_fwd(a: torch.Tensor, A_log: torch.Tensor, dt_bias: torch.Tensor) -> torch.Tensor:
    H = a.shape[-1]
    a2d = a.reshape(-1, H).contiguous()
    num_tiles, block_m, block_h = _launch_shape(a2d.shape[0], H)
    g = torch.empty(a2d.shape, device=a.device, dtype=torch.float32)
    _gdn_gate_fwd_kernel[(num_tiles,)](
        a2d, A_log, dt_bias, g, a2d.shape[0], H, THRESHOLD=SOFTPLUS_THRESHOLD, BLOCK_M=block_m, BLOCK_H=block_h,
    )
    return g.view(a.shape)


@gate_fwd.register_fake
def _(a, A_log, dt_bias):
    return a.new_empty(a.shape, dtype=torch.float32)


@torch.library.custom_op("gdn::gate_bwd", mutates_args=())
def gate_bwd(a: torch.Tensor, A_log: torch.Tensor, dt_bias: torch.Tensor,
             dg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    H = a.shape[-1]
    a2d = a.reshape(-1, H).contiguous()
    num_rows = a2d.shape[0]
    num_tiles, block_m, block_h = _launch_shape(num_rows, H)
    da = torch.empty_like(a2d)
    dA_log_parts = torch.empty(num_tiles, H, device=a2d.device, dtype=torch.float32)
    ddt_bias_parts = torch.empty_like(dA_log_parts)
    _gdn_gate_bwd_kernel[(num_tiles,)](
        a2d, A_log, dt_bias, dg.reshape(-1, H).contiguous(), da, dA_log_parts, ddt_bias_parts, num_rows, H,
        THRESHOLD=SOFTPLUS_THRESHOLD, BLOCK_M=block_m, BLOCK_H=block_h,
    )
    return da.view(a.shape), dA_log_parts.sum(0).to(A_log.dtype), ddt_bias_parts.sum(0).to(dt_bias.dtype)


@gate_bwd.register_fake
def _(a, A_log, dt_bias, dg):
    return torch.empty_like(a), torch.empty_like(A_log), torch.empty_like(dt_bias)


def _gate_setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _gate_backward(ctx, dg):
    return gate_bwd(*ctx.saved_tensors, dg)


gate_fwd.register_autograd(_gate_backward, setup_context=_gate_setup_context)


def gdn_gate(a: torch.Tensor, A_log: torch.Tensor, dt_bias: torch.Tensor) -> torch.Tensor:
    """g = -exp(A_log) * softplus(a + dt_bias) in fp32: a [..., H] (any float dtype), A_log and dt_bias [H].

    Returns the per-head log decay g [..., H] in fp32; differentiable in a, A_log and dt_bias.
    """
    H = a.shape[-1]
    if A_log.shape != (H,) or dt_bias.shape != (H,):
        raise ValueError(f"gdn_gate needs A_log and dt_bias [{H}], got {tuple(A_log.shape)}, {tuple(dt_bias.shape)}")
    return gate_fwd(a, A_log.contiguous(), dt_bias.contiguous())
