"""Step-by-step Mamba1 selective scan in Triton, for decoding (one or a few tokens per call).

One program per (channel block, sequence) keeps the state h [BD, N] in fp32 registers and applies, token by token,
    h <- exp(dt_t A) h + dt_t x_t B_t;   y_t = h C_t + D x_t        (dt_t = softplus(dt_raw_t + dt_bias) if asked)
All arithmetic is fp32; only y is written in x's dtype. Forward-only: when autograd needs gradients the call goes
to the chunked kernels, which compute the same function and have a backward.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from gdn.kernels.gated_delta._common import new_buffer
from gdn.kernels.selective_scan._common import check_inputs, scan_layout, state_block
from gdn.kernels.selective_scan.chunk import channel_block, chunk_selective_scan, flat_inputs, softplus


@triton.jit
def scan_step_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, dt_bias_ptr, h0_ptr, y_ptr, final_ptr, cu_seqlens_ptr,
    D_CH: tl.constexpr, N: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr,
    HAS_D: tl.constexpr, HAS_DT_BIAS: tl.constexpr, DT_SOFTPLUS: tl.constexpr, HAS_H0: tl.constexpr,
    STORE_FINAL: tl.constexpr,
):
    i_d, i_s = tl.program_id(0), tl.program_id(1)
    start, end = tl.load(cu_seqlens_ptr + i_s), tl.load(cu_seqlens_ptr + i_s + 1)
    channels, states = i_d * BD + tl.arange(0, BD), tl.arange(0, BN)
    channel_mask, state_mask, state_offsets, state_mask_2d, A, skip, dt_bias = channel_block(
        channels, states, A_ptr, D_ptr, dt_bias_ptr, D_CH, N, BD, HAS_D, HAS_DT_BIAS)
    h = tl.zeros((BD, BN), dtype=tl.float32)
    if HAS_H0:
        h += tl.load(h0_ptr + i_s.to(tl.int64) * D_CH * N + state_offsets, mask=state_mask_2d, other=0.0)
    for token in range(start.to(tl.int64), end.to(tl.int64)):
        x = tl.load(x_ptr + token * D_CH + channels, mask=channel_mask, other=0.0).to(tl.float32)
        dt = tl.load(dt_ptr + token * D_CH + channels, mask=channel_mask, other=0.0).to(tl.float32) + dt_bias
        if DT_SOFTPLUS:
            dt = softplus(dt)
        B = tl.load(B_ptr + token * N + states, mask=state_mask, other=0.0).to(tl.float32)
        C = tl.load(C_ptr + token * N + states, mask=state_mask, other=0.0).to(tl.float32)
        h = tl.exp(dt[:, None] * A) * h + (dt * x)[:, None] * B[None, :]
        y = tl.sum(h * C[None, :], 1) + skip * x
        tl.store(y_ptr + token * D_CH + channels, y.to(y_ptr.dtype.element_ty), mask=channel_mask)
    if STORE_FINAL:
        tl.store(final_ptr + i_s.to(tl.int64) * D_CH * N + state_offsets, h, mask=state_mask_2d)


def recurrent_selective_scan(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same arguments, layout and result as `chunk_selective_scan`, computed token by token (decode)."""
    inputs = (x, dt, A, B, C, D, initial_state)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (*inputs, dt_bias)):
        return chunk_selective_scan(*inputs, output_final_state, cu_seqlens, dt_bias, dt_softplus)
    check_inputs(*inputs, cu_seqlens, dt_bias)
    batch, length, channels = x.shape
    num_states = A.shape[1]
    BN, BD = state_block(num_states)
    layout = scan_layout(batch, length, cu_seqlens, x.device)
    x_f, dt_f, A_f, B_f, C_f, D_f, h0, bias_f = flat_inputs(*inputs, dt_bias)
    y = new_buffer(x_f.shape, x.dtype, x.device)
    final = None
    if output_final_state:
        final = new_buffer((layout.num_seqs, channels, num_states), torch.float32, x.device)
    scan_step_kernel[(triton.cdiv(channels, BD), layout.num_seqs)](
        x_f, dt_f, A_f, B_f, C_f, D_f, bias_f, h0, y, final, layout.cu_seqlens,
        D_CH=channels, N=num_states, BN=BN, BD=BD,
        HAS_D=D is not None, HAS_DT_BIAS=dt_bias is not None, DT_SOFTPLUS=dt_softplus, HAS_H0=h0 is not None,
        STORE_FINAL=output_final_state,
    )
    return y.view(batch, length, channels), final
