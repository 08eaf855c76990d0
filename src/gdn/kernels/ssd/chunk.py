"""Chunked Mamba2 SSD in Triton, on the gated-delta kernel family's state pass and chunk output (no delta rule).

The SSD is scalar-decay linear attention with q = C, k = B, v = dt o x and log decay g = dt A (torch_chunk.py):
    1. gc = chunk-local cumsum of g (64-token chunks, restarting at every sequence)     _cumsum.py
    2. V = dt o x                                                                        _elementwise.py
    3. state_forward    the state entering every chunk                                  _state.py
    4. output_forward   O = (exp(gc) o Q) S + (Q K^T o M) V                              _output.py
    5. y = O + D x                                                                       _elementwise.py
`ChunkSSD` runs steps 2-5 and their backward (the element-wise parts of which are one fused pass). B and C stay
per group: the chunk kernels read head h's from group h // (H / G) (their QK_H argument), so they are never
copied to every head; only dB and dC come per head from the kernels and are summed over each group's heads.
What the backward keeps is lean: x, dt, D, gc and B, C per group; V and the per-chunk states are rebuilt (at
Mamba2-1.3B's 64 heads and d_state 128: 56 KB less per token and layer than keeping per-head B/C, V and the
states).
"""
from __future__ import annotations

import torch

from gdn.kernels.gated_delta._common import chunk_layout
from gdn.kernels.gated_delta._output import output_backward_dv, output_backward_qkw, output_forward
from gdn.kernels.gated_delta._state import state_backward, state_forward
from gdn.kernels.ssd._cumsum import chunk_local_cumsum
from gdn.kernels.ssd._elementwise import ssd_elementwise_backward, ssd_skip, ssd_values, sum_over_groups
from gdn.kernels.ssd.reference import check_groups


class ChunkSSD(torch.autograd.Function):
    """y = SSD(x, dt, B, C) + D x given gc; x [B, T, H, P] contiguous, dt [B, T, H] fp32, q = C and k = B per group
    on flat [tokens, G, N]; per head, S_t = exp(g_t) S_{t-1} + k_t v_t^T, o_t = S_t^T q_t."""

    @staticmethod
    def forward(ctx, x, dt, D, q, k, gc, initial_state, output_final_state, layout):
        batch, T, H, P = x.shape
        v = ssd_values(x, dt).view(batch * T, H, P)
        h, _, final = state_forward(k, None, v, gc, initial_state, output_final_state, layout)
        o = output_forward(q, k, v, h, gc, 1.0, layout).view(x.shape)
        y = ssd_skip(o, x, D) if D is not None else o
        ctx.save_for_backward(x, dt, D, q, k, gc, initial_state)
        ctx.layout = layout
        return y, final

    @staticmethod
    def backward(ctx, dy, d_final):
        x, dt, D, q, k, gc, initial_state = ctx.saved_tensors
        layout, (batch, T, H, P), G = ctx.layout, x.shape, q.shape[1]
        v = ssd_values(x, dt).view(batch * T, H, P)  # rebuilt, as are the states
        h, _, _ = state_forward(k, None, v, gc, initial_state, False, layout)
        do = dy.contiguous().view(batch * T, H, P)  # dO = dy
        d_final = d_final.float().contiguous() if d_final is not None else None
        dv_intra = output_backward_dv(q, k, gc, do, 1.0, layout)
        dh, dv, dh0 = state_backward(q, k, None, gc, do, dv_intra, d_final, 1.0, initial_state is not None, layout)
        dq, dk, _, dgc = output_backward_qkw(q, k, v, h, dh, gc, do, dv, 1.0, False, layout)
        dx, ddt, dD = ssd_elementwise_backward(x, dt, D, do, dv)
        dq, dk = sum_over_groups(dq, G, q.dtype), sum_over_groups(dk, G, k.dtype)
        return dx, ddt, None if D is None else dD.to(D.dtype), dq, dk, dgc, dh0, None, None


def chunk_ssd(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same arguments and layout as `chunk_ssd_torch` (chunks of 64); x bf16, fp16 or fp32; dt, A, D fp32.
    Differentiable in every tensor input; y comes back in x's dtype, states [N_seq, H, N, P] fp32."""
    batch, T, H, P = x.shape
    if cu_seqlens is not None and batch != 1:
        raise ValueError(f"cu_seqlens needs batch size 1, got {batch}")
    N = B.shape[-1]
    layout = chunk_layout(batch, T, cu_seqlens, x.device)
    dt = dt.float()
    gc = chunk_local_cumsum((dt * A.float()).reshape(batch * T, H), layout)  # g = dt A
    check_groups(B.shape[2], H)
    q, k = (t.to(x.dtype).reshape(batch * T, t.shape[2], N).contiguous() for t in (C, B))
    h0 = initial_state.float().contiguous() if initial_state is not None else None
    return ChunkSSD.apply(
        x.contiguous(), dt.contiguous(), D.float() if D is not None else None, q, k,
        gc, h0, output_final_state, layout,
    )
