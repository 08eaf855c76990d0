"""Chunked Mamba2 SSD in Triton, on the gated-delta kernel family's state pass and chunk output (no delta rule).

The SSD is scalar-decay linear attention with q = C, k = B, v = dt o x and log decay g = dt A (torch_chunk.py):
    1. gc = chunk-local cumsum of g (64-token chunks, restarting at every sequence)     PyTorch, autograd
    2. state_forward    the state entering every chunk                                  _state.py
    3. output_forward   O = (exp(gc) o Q) S + (Q K^T o M) V                              _output.py
    y = O + D x                                                                          PyTorch, autograd
`ScalarDecayAttention` runs steps 2-3 and their Triton backward; the element-wise parts around it are autograd.
"""
from __future__ import annotations

import torch

from gdn.kernels.gated_delta._common import CHUNK, chunk_layout
from gdn.kernels.gated_delta._output import output_backward_dv, output_backward_qkw, output_forward
from gdn.kernels.gated_delta._state import state_backward, state_forward
from gdn.kernels.ssd.reference import expand_groups


class ScalarDecayAttention(torch.autograd.Function):
    """S_t = exp(g_t) S_{t-1} + k_t v_t^T, o_t = S_t^T q_t on flat [tokens, H, D] tensors, given gc."""

    @staticmethod
    def forward(ctx, q, k, v, gc, initial_state, output_final_state, layout):
        h, _, final = state_forward(k, None, v, gc, initial_state, output_final_state, layout)
        o = output_forward(q, k, v, h, gc, 1.0, layout)
        ctx.save_for_backward(q, k, v, gc, h)
        ctx.layout, ctx.has_initial_state = layout, initial_state is not None
        return o, final

    @staticmethod
    def backward(ctx, do, d_final):
        q, k, v, gc, h = ctx.saved_tensors
        layout = ctx.layout
        do = do.contiguous()
        d_final = d_final.float().contiguous() if d_final is not None else None
        dv_intra = output_backward_dv(q, k, gc, do, 1.0, layout)
        dh, dv, dh0 = state_backward(q, k, None, gc, do, dv_intra, d_final, 1.0, ctx.has_initial_state, layout)
        dq, dk, _, dgc = output_backward_qkw(q, k, v, h, dh, gc, do, dv, 1.0, False, layout)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), dgc, dh0, None, None


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
    q, k = (expand_groups(t, H).to(x.dtype).reshape(batch * T, H, N).contiguous() for t in (C, B))
    v = (dt[..., None] * x).to(x.dtype).reshape(batch * T, H, P).contiguous()  # V = dt o x
    h0 = initial_state.float().contiguous() if initial_state is not None else None
    o, final = ScalarDecayAttention.apply(
        q, k, v, gc.reshape(batch * T, H).contiguous(), h0, output_final_state, layout
    )
    y = o.view(batch, T, H, P).float()
    if D is not None:
        y = y + D.float()[:, None] * x.float()  # the skip connection D x
    return y.to(x.dtype), final
