"""Chunked Mamba2 SSD in Triton, on the gated-delta kernel family's state pass and chunk output (no delta rule).

The SSD is scalar-decay linear attention with q = C, k = B, v = dt o x and log decay g = dt A (torch_chunk.py):
    1. gc = chunk-local cumsum of g (64-token chunks, restarting at every sequence)     PyTorch, autograd
    2. state_forward    the state entering every chunk                                  _state.py
    3. output_forward   O = (exp(gc) o Q) S + (Q K^T o M) V                              _output.py
    y = O + D x                                                                          `SkipConnection`
`ScalarDecayAttention` runs steps 2-3 and their Triton backward; the element-wise parts around it are autograd.
What the backward keeps is lean: B and C per group (not expanded to every head), V and gc; the per-chunk states
are rebuilt by a second state pass (at Mamba2-1.3B's 64 heads and d_state 128: 48 KB less per token and layer).
"""
from __future__ import annotations

import torch

from gdn.kernels.gated_delta._common import CHUNK, chunk_layout
from gdn.kernels.gated_delta._output import output_backward_dv, output_backward_qkw, output_forward
from gdn.kernels.gated_delta._state import state_backward, state_forward


def heads_of_groups(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    """[T, G, N] -> [T, H, N] contiguous: group g serves heads g H/G ... (g + 1) H/G - 1."""
    return t.repeat_interleave(num_heads // t.shape[1], dim=1)


def sum_over_groups(t: torch.Tensor, groups: int) -> torch.Tensor:
    """[T, H, N] per-head gradients -> [T, G, N], summed over each group's heads (fp32)."""
    T, H, N = t.shape
    return t.float().view(T, groups, H // groups, N).sum(2)


class ScalarDecayAttention(torch.autograd.Function):
    """S_t = exp(g_t) S_{t-1} + k_t v_t^T, o_t = S_t^T q_t on flat [tokens, heads, dim] tensors, given gc; q, k
    come per group [tokens, G, N] and serve H / G heads each."""

    @staticmethod
    def forward(ctx, q_groups, k_groups, v, gc, initial_state, output_final_state, layout):
        H = v.shape[1]
        q, k = heads_of_groups(q_groups, H), heads_of_groups(k_groups, H)
        h, _, final = state_forward(k, None, v, gc, initial_state, output_final_state, layout)
        o = output_forward(q, k, v, h, gc, 1.0, layout)
        ctx.save_for_backward(q_groups, k_groups, v, gc, initial_state)
        ctx.layout = layout
        return o, final

    @staticmethod
    def backward(ctx, do, d_final):
        q_groups, k_groups, v, gc, initial_state = ctx.saved_tensors
        layout, H, G = ctx.layout, v.shape[1], q_groups.shape[1]
        q, k = heads_of_groups(q_groups, H), heads_of_groups(k_groups, H)
        h, _, _ = state_forward(k, None, v, gc, initial_state, False, layout)  # rebuilt, not kept
        do = do.contiguous()
        d_final = d_final.float().contiguous() if d_final is not None else None
        dv_intra = output_backward_dv(q, k, gc, do, 1.0, layout)
        dh, dv, dh0 = state_backward(q, k, None, gc, do, dv_intra, d_final, 1.0, initial_state is not None, layout)
        dq, dk, _, dgc = output_backward_qkw(q, k, v, h, dh, gc, do, dv, 1.0, False, layout)
        dq, dk = sum_over_groups(dq, G), sum_over_groups(dk, G)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dgc, dh0, None, None


class SkipConnection(torch.autograd.Function):
    """y = o + D x per head (x, o [B, T, H, P], D [H]), summed in fp32, y in x's dtype; keeps x and D only."""

    @staticmethod
    def forward(ctx, o, x, D):
        ctx.save_for_backward(x, D)
        return (o.float() + x.float() * D.float()[:, None]).to(x.dtype)

    @staticmethod
    def backward(ctx, dy):
        x, D = ctx.saved_tensors
        dx = (dy.float() * D.float()[:, None]).to(x.dtype)
        dD = (dy.float() * x.float()).sum(-1).flatten(0, -2).sum(0)
        return dy, dx, dD.to(D.dtype)


def chunk_local_cumsum(g: torch.Tensor, cu_seqlens: torch.Tensor | None) -> torch.Tensor:
    """g [B, T, H] -> the cumulative sum restarting at every 64-token chunk of every sequence (fp32).

    Taken as a difference of float64 prefix sums, so that long sequences lose no precision; differentiable."""
    B, T, H = g.shape
    tokens = torch.arange(T, device=g.device)
    if cu_seqlens is None:
        sequence_start = torch.zeros_like(tokens)
    else:
        starts = cu_seqlens.to(device=g.device, dtype=torch.long)
        sequence_start = starts[torch.searchsorted(starts[1:], tokens, right=True)]
    chunk_start = tokens - (tokens - sequence_start) % CHUNK
    inclusive = g.double().cumsum(1)
    exclusive = inclusive - g.double()
    return (inclusive - exclusive[:, chunk_start]).float()


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
    gc = chunk_local_cumsum(dt * A.float(), cu_seqlens)  # g = dt A
    if H % B.shape[2]:
        raise ValueError(f"ngroups={B.shape[2]} must divide the number of heads {H}")
    q, k = (t.to(x.dtype).reshape(batch * T, t.shape[2], N).contiguous() for t in (C, B))
    v = (dt[..., None] * x).to(x.dtype).reshape(batch * T, H, P).contiguous()  # V = dt o x
    h0 = initial_state.float().contiguous() if initial_state is not None else None
    o, final = ScalarDecayAttention.apply(
        q, k, v, gc.reshape(batch * T, H).contiguous(), h0, output_final_state, layout
    )
    o = o.view(batch, T, H, P)
    y = SkipConnection.apply(o, x, D) if D is not None else o  # the skip connection D x
    return y, final
