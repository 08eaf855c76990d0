"""SwiGLU's element-wise part in Triton: h = SiLU(gate) * up, and its backward, each one pass over the tensors.

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
def _swiglu_fwd_kernel(gate_ptr, up_ptr, h_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    gate = tl.load(gate_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(up_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(h_ptr + offs, (gate * tl.sigmoid(gate) * up).to(h_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _swiglu_bwd_kernel(gate_ptr, up_ptr, dh_ptr, h_ptr, dgate_ptr, dup_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    gate = tl.load(gate_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(up_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    dh = tl.load(dh_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    sig = tl.sigmoid(gate)
    silu = gate * sig
    tl.store(h_ptr + offs, (silu * up).to(h_ptr.dtype.element_ty), mask=mask)
    tl.store(dgate_ptr + offs, (dh * up * sig * (1.0 + gate * (1.0 - sig))).to(dgate_ptr.dtype.element_ty), mask=mask)
    tl.store(dup_ptr + offs, (dh * silu).to(dup_ptr.dtype.element_ty), mask=mask)


def _check(gate: torch.Tensor, up: torch.Tensor) -> None:
    if gate.shape != up.shape or gate.dtype != up.dtype:
        raise ValueError(f"swiglu needs gate and up of one shape and dtype, got {tuple(gate.shape)} {gate.dtype} "
                         f"and {tuple(up.shape)} {up.dtype}")


def swiglu_forward(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """SiLU(gate) * up, in gate's dtype (not differentiable: GatedDown in gdn.models.mlp wraps it)."""
    _check(gate, up)
    gate, up = gate.contiguous(), up.contiguous()
    h = torch.empty_like(gate)
    _swiglu_fwd_kernel[(triton.cdiv(gate.numel(), BLOCK),)](gate, up, h, gate.numel(), BLOCK=BLOCK)
    return h


def swiglu_backward(gate: torch.Tensor, up: torch.Tensor, dh: torch.Tensor):
    """-> (h = SiLU(gate) * up recomputed, dgate, dup), all in gate's dtype."""
    _check(gate, up)
    gate, up, dh = gate.contiguous(), up.contiguous(), dh.to(gate.dtype).contiguous()
    h, dgate, dup = torch.empty_like(gate), torch.empty_like(gate), torch.empty_like(gate)
    _swiglu_bwd_kernel[(triton.cdiv(gate.numel(), BLOCK),)](gate, up, dh, h, dgate, dup, gate.numel(), BLOCK=BLOCK)
    return h, dgate, dup
