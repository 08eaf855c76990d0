"""SwiGLU's element-wise part in Triton: h = SiLU(gate) * up, and its backward, each one pass over the tensors.
gate and up are the two halves of the last dim of one tensor, gate_up [..., 2H]: the MLP computes them as one GEMM.

Backward, with s = sigmoid(gate) and dh the gradient reaching h:
    dgate = dh * up * s * (1 + gate * (1 - s))     (SiLU'(g) = s (1 + g (1 - s)))
    dup   = dh * SiLU(gate)
and h itself again, for the down projection's weight gradient, so the forward's h need not be kept.
Math in fp32, outputs in the inputs' dtype.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 2048


@triton.jit
def _gate_and_up_offsets(offs, H):
    """Offsets in gate_up [rows, 2H] of the gate (first half of a row) and up (second half) element that element
    offs of h [rows, H] is made from."""
    row = offs // H
    gate_offs = offs + row * H  # row * 2H + (offs - row * H)
    return gate_offs, gate_offs + H


@triton.jit
def _swiglu_fwd_kernel(gate_up_ptr, h_ptr, n, H, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    gate_offs, up_offs = _gate_and_up_offsets(offs, H)
    gate = tl.load(gate_up_ptr + gate_offs, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(gate_up_ptr + up_offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(h_ptr + offs, (gate * tl.sigmoid(gate) * up).to(h_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _swiglu_bwd_kernel(gate_up_ptr, dh_ptr, h_ptr, dgate_up_ptr, n, H, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    gate_offs, up_offs = _gate_and_up_offsets(offs, H)
    gate = tl.load(gate_up_ptr + gate_offs, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(gate_up_ptr + up_offs, mask=mask, other=0.0).to(tl.float32)
    dh = tl.load(dh_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    sig = tl.sigmoid(gate)
    silu = gate * sig
    tl.store(h_ptr + offs, (silu * up).to(h_ptr.dtype.element_ty), mask=mask)
    out_ty = dgate_up_ptr.dtype.element_ty
    tl.store(dgate_up_ptr + gate_offs, (dh * up * sig * (1.0 + gate * (1.0 - sig))).to(out_ty), mask=mask)
    tl.store(dgate_up_ptr + up_offs, (dh * silu).to(out_ty), mask=mask)


def _check(gate_up: torch.Tensor) -> int:
    if gate_up.ndim == 0 or gate_up.shape[-1] % 2:
        raise ValueError(f"swiglu needs gate_up [..., 2H] (gate then up in the last dim), got {tuple(gate_up.shape)}")
    return gate_up.shape[-1] // 2


def swiglu_forward(gate_up: torch.Tensor) -> torch.Tensor:
    """SiLU(gate) * up [..., H] from gate_up [..., 2H] (gate, then up: the joined output of the gate and up
    projections), in its dtype (not differentiable: GatedDown in gdn.models.mlp wraps it)."""
    H = _check(gate_up)
    gate_up = gate_up.contiguous()
    h = gate_up.new_empty(gate_up.shape[:-1] + (H,))
    _swiglu_fwd_kernel[(triton.cdiv(h.numel(), BLOCK),)](gate_up, h, h.numel(), H, BLOCK=BLOCK)
    return h


def swiglu_backward(gate_up: torch.Tensor, dh: torch.Tensor):
    """-> (h = SiLU(gate) * up recomputed [..., H], d gate_up [..., 2H]), both in gate_up's dtype."""
    H = _check(gate_up)
    gate_up, dh = gate_up.contiguous(), dh.to(gate_up.dtype).contiguous()
    if dh.shape != gate_up.shape[:-1] + (H,):
        raise ValueError(f"swiglu_backward needs dh {tuple(gate_up.shape[:-1] + (H,))}, got {tuple(dh.shape)}")
    h, dgate_up = torch.empty_like(dh), torch.empty_like(gate_up)
    _swiglu_bwd_kernel[(triton.cdiv(h.numel(), BLOCK),)](gate_up, dh, h, dgate_up, h.numel(), H, BLOCK=BLOCK)
    return h, dgate_up
