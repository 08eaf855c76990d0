"""Chunked Mamba2 SSD in Triton, on the gated-delta kernel family's state pass and chunk output (no delta rule).

The SSD is scalar-decay linear attention with q = C, k = B, v = dt o x and log decay g = dt A (torch_chunk.py):
    1. gc = chunk-local cumsum of g (64-token chunks, restarting at every sequence)     _cumsum.py
    2. V = dt o x                                                                        _elementwise.py
    3. state_forward    the state entering every chunk                                  _state.py
    4. output_forward   O = (exp(gc) o Q) S + (Q K^T o M) V                              _output.py
    5. y = O + D x                                                                       _elementwise.py
The custom op gdn::chunk_ssd_fwd runs steps 1-5, gdn::chunk_ssd_bwd their backward (the element-wise parts of
which are one fused pass). B and C stay per group: the chunk kernels read head h's from group h // (H / G) (their
QK_H argument), so they are never copied to every head, and the output backward sums dB and dC over a group's
heads as it goes (output_backward_qk_grouped: a few heads per program, never a per-head [tokens, H, N] gradient).
What the backward keeps is lean: x, dt, D, g and B, C per group; gc, V and the per-chunk states are rebuilt (at
Mamba2-1.3B's 64 heads and d_state 128: 56 KB less per token and layer than keeping per-head B/C, V and the
states).
"""
from __future__ import annotations

import torch

from gdn.kernels.gated_delta._common import EMPTY, LOG_DECAY_FLOOR, absent, chunk_layout
from gdn.kernels.gated_delta._output import output_backward_dv, output_backward_qk_grouped, output_forward
from gdn.kernels.gated_delta._state import state_backward, state_forward
from gdn.kernels.ssd._cumsum import chunk_local_cumsum
from gdn.kernels.ssd._elementwise import ssd_elementwise_backward, ssd_skip, ssd_values
from gdn.kernels.ssd.reference import check_groups


# Two torch.library custom ops (namespace gdn, as the GDN kernels: gdn/kernels/gated_delta/chunk.py), so that
# torch.compile traces a Mamba2 block without a graph break and op-level selective checkpointing can save the SSD.
# Everything the backward needs is an input of the forward op (V, gc and the states are rebuilt), so the forward
# returns only y and the final state (empty without output_final_state: an op cannot return None).


def _layout(x: torch.Tensor, cu_seqlens: torch.Tensor | None):
    return chunk_layout(x.shape[0], x.shape[1], cu_seqlens, x.device)


@torch.library.custom_op("gdn::chunk_ssd_fwd", mutates_args=())
def chunk_ssd_fwd(
    x: torch.Tensor, dt: torch.Tensor, D: torch.Tensor | None, q: torch.Tensor, k: torch.Tensor, g: torch.Tensor,
    initial_state: torch.Tensor | None, output_final_state: bool, cu_seqlens: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """y = SSD(x, dt, B, C) + D x; x [B, T, H, P] contiguous, dt [B, T, H] fp32, q = C and k = B per group on flat
    [tokens, G, N], g = dt A [tokens, H] fp32; per head, S_t = exp(g_t) S_{t-1} + k_t v_t^T, o_t = S_t^T q_t."""
    batch, T, H, P = x.shape
    layout = _layout(x, cu_seqlens)
    gc = chunk_local_cumsum(g, layout)
    v = ssd_values(x, dt).view(batch * T, H, P)
    h, _, final = state_forward(k, None, v, gc, initial_state, output_final_state, layout)
    o = output_forward(q, k, v, h, gc, 1.0, layout).view(x.shape)
    y = ssd_skip(o, x, D) if D is not None else o
    return y, final if final is not None else absent(x)


@chunk_ssd_fwd.register_fake
def _(x, dt, D, q, k, g, initial_state, output_final_state, cu_seqlens):
    batch, T, H, P = x.shape
    sequences = batch if cu_seqlens is None else cu_seqlens.shape[0] - 1
    final = (sequences, H, k.shape[-1], P) if output_final_state else EMPTY
    return x.new_empty(x.shape), x.new_empty(final, dtype=torch.float32)


@torch.library.custom_op("gdn::chunk_ssd_bwd", mutates_args=())
def chunk_ssd_bwd(
    x: torch.Tensor, dt: torch.Tensor, D: torch.Tensor | None, q: torch.Tensor, k: torch.Tensor, g: torch.Tensor,
    initial_state: torch.Tensor | None, cu_seqlens: torch.Tensor | None, dy: torch.Tensor,
    d_final: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> dx, ddt, dD, dq, dk (per group), dg, dh0 (dD, dh0 empty without D, initial_state)."""
    batch, T, H, P = x.shape
    layout = _layout(x, cu_seqlens)
    gc = chunk_local_cumsum(g, layout)  # rebuilt, as are V and the states
    v = ssd_values(x, dt).view(batch * T, H, P)
    h, _, _ = state_forward(k, None, v, gc, initial_state, False, layout)
    do = dy.contiguous().view(batch * T, H, P)  # dO = dy
    d_final = d_final.float().contiguous() if d_final is not None else None
    dv_intra = output_backward_dv(q, k, gc, do, 1.0, layout)
    dh, dv, dh0 = state_backward(q, k, None, gc, do, dv_intra, d_final, 1.0, initial_state is not None, layout)
    dq, dk, dgc = output_backward_qk_grouped(q, k, v, h, dh, gc, do, 1.0, layout)  # dC, dB per group
    dx, ddt, dD = ssd_elementwise_backward(x, dt, D, do, dv)
    return (dx, ddt, absent(x) if D is None else dD.to(D.dtype), dq, dk, chunk_local_cumsum(dgc, layout, reverse=True),
            absent(x) if dh0 is None else dh0)


@chunk_ssd_bwd.register_fake
def _(x, dt, D, q, k, g, initial_state, cu_seqlens, dy, d_final):
    return (x.new_empty(x.shape), dt.new_empty(dt.shape), absent(x) if D is None else D.new_empty(D.shape),
            q.new_empty(q.shape), k.new_empty(k.shape), g.new_empty(g.shape),
            absent(x) if initial_state is None else initial_state.new_empty(initial_state.shape, dtype=torch.float32))


def _setup_context(ctx, inputs, output):
    x, dt, D, q, k, g, initial_state, output_final_state, cu_seqlens = inputs
    ctx.save_for_backward(x, dt, D, q, k, g, initial_state, cu_seqlens)
    ctx.output_final_state = output_final_state


def _backward(ctx, dy, d_final):
    x, dt, D, q, k, g, initial_state, cu_seqlens = ctx.saved_tensors
    dx, ddt, dD, dq, dk, dg, dh0 = chunk_ssd_bwd(x, dt, D, q, k, g, initial_state, cu_seqlens, dy,
                                                 d_final if ctx.output_final_state else None)
    return (dx, ddt, None if D is None else dD, dq, dk, dg, None if initial_state is None else dh0, None, None)


chunk_ssd_fwd.register_autograd(_backward, setup_context=_setup_context)


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
    dt = dt.float()
    g = (dt * A.float()).clamp_min(LOG_DECAY_FLOOR).reshape(batch * T, H)  # _common.LOG_DECAY_FLOOR says why
    check_groups(B.shape[2], H)
    q, k = (t.to(x.dtype).reshape(batch * T, t.shape[2], N).contiguous() for t in (C, B))
    h0 = initial_state.float().contiguous() if initial_state is not None else None
    y, final = chunk_ssd_fwd(x.contiguous(), dt.contiguous(), D.float() if D is not None else None, q, k,
                             g.contiguous(), h0, output_final_state, cu_seqlens)
    return y, (final if output_final_state else None)
