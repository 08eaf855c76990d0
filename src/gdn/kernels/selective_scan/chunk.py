"""Mamba1 selective scan in Triton for training: forward, and a backward that recomputes the states from checkpoints.

    h_t[d, n] = a_t[d, n] h_{t-1}[d, n] + u_t[d, n],   a_t = exp(dt_t[d] A[d, n]),  u_t = dt_t[d] B_t[n] x_t[d]
    y_t[d]    = sum_n C_t[n] h_t[d, n] + D[d] x_t[d]

One program per (channel block of BD channels, sequence) walks the sequence tile by tile (TILE = 16 tokens) with the
state [BD, N] in fp32 registers. Within a tile every h_t comes from one associative scan over time of the pairs
(a_t, u_t) (composing h -> a h + u), then h_t = (a_1 ... a_t) h_in + scanned u_t. The forward stores the state
entering every tile: one checkpoint per 16 tokens, never every h_t.

Backward, tiles in reverse. With g_t = dL/dh_t (the total adjoint of h_t), by the chain rule
    g_t = C_t dy_t + a_{t+1} g_{t+1}                       a reverse scan over the tile, entering with g of the
                                                           next tile's first token times its a (the carried dh)
and with a_t h_{t-1} = h_t - u_t (no division by a possibly underflowed a_t):
    dx_t = dt_t sum_n g_t B_t + D dy_t                      dB_t[n] = sum_d g_t dt_t x_t
    ddt_t = x_t sum_n g_t B_t + sum_n g_t (h_t - u_t) A     dC_t[n] = sum_d dy_t h_t
    dA = sum_t g_t (h_t - u_t) dt_t                         dD = sum_t dy_t x_t,   dh0 = a_first g_first
The states h_t of a tile are recomputed from its checkpoint. dB and dC sum over all channels, that is over
programs: each channel block writes its own partial sums and PyTorch adds them (deterministic, no atomics);
dA and dD likewise per sequence.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from gdn.kernels.gated_delta._common import autotune, new_buffer
from gdn.kernels.selective_scan._common import TILE, ScanLayout, check_inputs, scan_layout, state_block


@triton.jit
def _compose(a1, u1, a2, u2):
    """h -> a1 h + u1, then h -> a2 h + u2, as one step: the combine of the linear-recurrence scan."""
    return a1 * a2, a2 * u1 + u2


@triton.jit
def _load_rows(ptr, rows, row_mask, cols, col_mask, WIDTH: tl.constexpr):
    """ptr[rows, cols] of a row-major [tokens, WIDTH] tensor as fp32, zero where masked."""
    offsets = rows.to(tl.int64)[:, None] * WIDTH + cols[None, :]
    return tl.load(ptr + offsets, mask=row_mask[:, None] & col_mask[None, :], other=0.0).to(tl.float32)


@triton.jit
def _forward_inputs(x_ptr, dt_ptr, B_ptr, C_ptr, rows, end, channels, channel_mask, states, state_mask,
                    D_CH: tl.constexpr, N: tl.constexpr):
    """x, dt [BT, BD] and B, C [BT, BN] of the tile at `rows` (zero past the sequence's end)."""
    row_mask = rows < end
    x = _load_rows(x_ptr, rows, row_mask, channels, channel_mask, D_CH)
    dt = _load_rows(dt_ptr, rows, row_mask, channels, channel_mask, D_CH)
    B = _load_rows(B_ptr, rows, row_mask, states, state_mask, N)
    C = _load_rows(C_ptr, rows, row_mask, states, state_mask, N)
    return x, dt, B, C


@triton.jit
def _backward_inputs(checkpoint_ptr, x_ptr, dt_ptr, dy_ptr, B_ptr, C_ptr, first_tile, i_t, start, end, steps,
                     channels, channel_mask, states, state_mask, state_offsets, state_mask_2d,
                     D_CH: tl.constexpr, N: tl.constexpr, BT: tl.constexpr):
    """What the backward reads for tile i_t of a sequence: its checkpoint h_in, x, dt, dy, the next token's dt
    (0, so a_{t+1} = 1, at the tile's last row, whose link to the next tile is the carried dh, and past the
    sequence's end), B and C. All zero for i_t = -1, the tile before the first."""
    # masks compared block by block: Triton 3.9's interpreter turns (block & scalar) masks into int32
    exists = (tl.zeros_like(state_offsets) + i_t) >= 0
    slot = (first_tile + i_t).to(tl.int64) * D_CH * N
    h_in = tl.load(checkpoint_ptr + slot + state_offsets, mask=state_mask_2d & exists, other=0.0)
    rows = start + i_t * BT + steps
    row_mask = (rows >= start) & (rows < end)
    x = _load_rows(x_ptr, rows, row_mask, channels, channel_mask, D_CH)
    dt = _load_rows(dt_ptr, rows, row_mask, channels, channel_mask, D_CH)
    dy = _load_rows(dy_ptr, rows, row_mask, channels, channel_mask, D_CH)
    next_mask = row_mask & (steps < BT - 1) & (rows + 1 < end)
    dt_next = _load_rows(dt_ptr, rows + 1, next_mask, channels, channel_mask, D_CH)
    B = _load_rows(B_ptr, rows, row_mask, states, state_mask, N)
    C = _load_rows(C_ptr, rows, row_mask, states, state_mask, N)
    return h_in, x, dt, dy, dt_next, B, C


@triton.jit
def _tile_states(h_in, A, x, dt, B):
    """Every state of a tile, h_t [BT, BD, BN], from the state entering it; also a_t and u_t [BT, BD, BN]."""
    decay = tl.exp(dt[:, :, None] * A[None, :, :])
    update = (dt * x)[:, :, None] * B[:, None, :]
    decay_product, local = tl.associative_scan((decay, update), 0, _compose)
    return decay_product * h_in[None, :, :] + local, decay, update


@autotune([triton.Config({}, num_warps=w) for w in (4, 8, 16)], key=["BN"])
@triton.jit
def scan_forward_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, h0_ptr, y_ptr, final_ptr, checkpoint_ptr,
    cu_seqlens_ptr, tile_offsets_ptr,
    D_CH: tl.constexpr, N: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr,
    HAS_D: tl.constexpr, HAS_H0: tl.constexpr, STORE_FINAL: tl.constexpr, STORE_CHECKPOINTS: tl.constexpr,
):
    i_d, i_s = tl.program_id(0), tl.program_id(1)
    start, end = tl.load(cu_seqlens_ptr + i_s), tl.load(cu_seqlens_ptr + i_s + 1)
    channels, states, steps = i_d * BD + tl.arange(0, BD), tl.arange(0, BN), tl.arange(0, BT)
    channel_mask, state_mask = channels < D_CH, states < N
    state_offsets = channels[:, None] * N + states[None, :]
    state_mask_2d = channel_mask[:, None] & state_mask[None, :]
    A = tl.load(A_ptr + state_offsets, mask=state_mask_2d, other=0.0).to(tl.float32)
    skip = tl.zeros((BD,), dtype=tl.float32)
    if HAS_D:
        skip += tl.load(D_ptr + channels, mask=channel_mask, other=0.0).to(tl.float32)
    h = tl.zeros((BD, BN), dtype=tl.float32)
    if HAS_H0:
        h += tl.load(h0_ptr + i_s.to(tl.int64) * D_CH * N + state_offsets, mask=state_mask_2d, other=0.0)
    first_tile = tl.load(tile_offsets_ptr + i_s)
    # Pipelined by hand: the next tile's inputs are requested before this tile's arithmetic, so that their memory
    # latency overlaps it (Triton's own loop pipelining is for loads that feed tl.dot).
    rows = start + steps
    x, dt, B, C = _forward_inputs(x_ptr, dt_ptr, B_ptr, C_ptr, rows, end, channels, channel_mask, states,
                                  state_mask, D_CH, N)
    for i_t in range(tl.cdiv(end - start, BT)):
        rows_ahead = rows + BT
        x_ahead, dt_ahead, B_ahead, C_ahead = _forward_inputs(
            x_ptr, dt_ptr, B_ptr, C_ptr, rows_ahead, end, channels, channel_mask, states, state_mask, D_CH, N)
        if STORE_CHECKPOINTS:
            slot = (first_tile + i_t).to(tl.int64) * D_CH * N
            tl.store(checkpoint_ptr + slot + state_offsets, h, mask=state_mask_2d)
        hs, _, _ = _tile_states(h, A, x, dt, B)  # rows past the end have dt = x = 0: a = 1, u = 0
        y = tl.sum(hs * C[:, None, :], 2) + skip[None, :] * x
        y_offsets = rows.to(tl.int64)[:, None] * D_CH + channels[None, :]
        y_mask = (rows < end)[:, None] & channel_mask[None, :]
        tl.store(y_ptr + y_offsets, y.to(y_ptr.dtype.element_ty), mask=y_mask)
        h = tl.sum(tl.where(steps[:, None, None] == BT - 1, hs, 0.0), 0)  # the state after the tile
        x, dt, B, C, rows = x_ahead, dt_ahead, B_ahead, C_ahead, rows_ahead
    if STORE_FINAL:
        tl.store(final_ptr + i_s.to(tl.int64) * D_CH * N + state_offsets, h, mask=state_mask_2d)


@autotune([triton.Config({}, num_warps=w) for w in (8, 16, 4)], key=["BN"])
@triton.jit
def scan_backward_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, dy_ptr, checkpoint_ptr, dfinal_ptr,
    dx_ptr, ddt_ptr, dB_part_ptr, dC_part_ptr, dA_part_ptr, dD_part_ptr, dh0_ptr,
    cu_seqlens_ptr, tile_offsets_ptr, num_tokens,
    D_CH: tl.constexpr, N: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr,
    HAS_D: tl.constexpr, HAS_DFINAL: tl.constexpr, STORE_DH0: tl.constexpr,
):
    i_d, i_s = tl.program_id(0), tl.program_id(1)
    start, end = tl.load(cu_seqlens_ptr + i_s), tl.load(cu_seqlens_ptr + i_s + 1)
    channels, states, steps = i_d * BD + tl.arange(0, BD), tl.arange(0, BN), tl.arange(0, BT)
    channel_mask, state_mask = channels < D_CH, states < N
    state_offsets = channels[:, None] * N + states[None, :]
    state_mask_2d = channel_mask[:, None] & state_mask[None, :]
    A = tl.load(A_ptr + state_offsets, mask=state_mask_2d, other=0.0).to(tl.float32)
    skip = tl.zeros((BD,), dtype=tl.float32)
    if HAS_D:
        skip += tl.load(D_ptr + channels, mask=channel_mask, other=0.0).to(tl.float32)
    dh = tl.zeros((BD, BN), dtype=tl.float32)  # dL/dh of the state leaving the current tile, from later tokens
    if HAS_DFINAL:
        dh += tl.load(dfinal_ptr + i_s.to(tl.int64) * D_CH * N + state_offsets, mask=state_mask_2d, other=0.0)
    dA = tl.zeros((BD, BN), dtype=tl.float32)
    dD = tl.zeros((BD,), dtype=tl.float32)
    first_tile = tl.load(tile_offsets_ptr + i_s)
    num_tiles = tl.cdiv(end - start, BT)
    # pipelined by hand as in the forward: the inputs of the tile processed next (the one before) are requested
    # before this tile's arithmetic
    h_in, x, dt, dy, dt_next, B, C = _backward_inputs(
        checkpoint_ptr, x_ptr, dt_ptr, dy_ptr, B_ptr, C_ptr, first_tile, num_tiles - 1, start, end, steps,
        channels, channel_mask, states, state_mask, state_offsets, state_mask_2d, D_CH, N, BT)
    for j in range(num_tiles):
        i_t = num_tiles - 1 - j
        h_in_ahead, x_ahead, dt_ahead, dy_ahead, dt_next_ahead, B_ahead, C_ahead = _backward_inputs(
            checkpoint_ptr, x_ptr, dt_ptr, dy_ptr, B_ptr, C_ptr, first_tile, i_t - 1, start, end, steps,
            channels, channel_mask, states, state_mask, state_offsets, state_mask_2d, D_CH, N, BT)
        rows = start + i_t * BT + steps
        row_mask = rows < end
        token_mask = row_mask[:, None] & channel_mask[None, :]
        # dB and dC are this channel block's shares of sums over channels: [BT, BN] partials
        part_offsets = (i_d.to(tl.int64) * num_tokens + rows)[:, None] * N + states[None, :]
        part_mask = row_mask[:, None] & state_mask[None, :]
        hs, _, update = _tile_states(h_in, A, x, dt, B)
        tl.store(dC_part_ptr + part_offsets, tl.sum(hs * dy[:, :, None], 1), mask=part_mask)
        carried = hs - update  # a_t h_{t-1}; hs and update are not needed past this point (fewer live registers)
        # g_t = C_t dy_t + a_{t+1} g_{t+1}: a reverse scan, entering at the tile's last row with dh
        decay_next = tl.exp(dt_next[:, :, None] * A[None, :, :])
        readout = dy[:, :, None] * C[:, None, :]
        carry, local = tl.associative_scan((decay_next, readout), 0, _compose, reverse=True)
        g = carry * dh[None, :, :] + local
        g_dot_B = tl.sum(g * B[:, None, :], 2)  # [BT, BD]
        from_decay = g * carried  # g_t a_t h_{t-1}
        dx = dt * g_dot_B + skip[None, :] * dy
        ddt = x * g_dot_B + tl.sum(from_decay * A[None, :, :], 2)
        token_offsets = rows.to(tl.int64)[:, None] * D_CH + channels[None, :]
        tl.store(dx_ptr + token_offsets, dx.to(dx_ptr.dtype.element_ty), mask=token_mask)
        tl.store(ddt_ptr + token_offsets, ddt.to(ddt_ptr.dtype.element_ty), mask=token_mask)
        tl.store(dB_part_ptr + part_offsets, tl.sum(g * (dt * x)[:, :, None], 1), mask=part_mask)
        dA += tl.sum(from_decay * dt[:, :, None], 0)
        dD += tl.sum(dy * x, 0)
        # dL/dh_in = a_first g_first, from the tile's first row
        dt_first = tl.sum(tl.where(steps[:, None] == 0, dt, 0.0), 0)
        g_first = tl.sum(tl.where(steps[:, None, None] == 0, g, 0.0), 0)
        dh = tl.exp(dt_first[:, None] * A) * g_first
        h_in, x, dt, dy, dt_next, B, C = h_in_ahead, x_ahead, dt_ahead, dy_ahead, dt_next_ahead, B_ahead, C_ahead
    if STORE_DH0:
        tl.store(dh0_ptr + i_s.to(tl.int64) * D_CH * N + state_offsets, dh, mask=state_mask_2d)
    tl.store(dA_part_ptr + i_s.to(tl.int64) * D_CH * N + state_offsets, dA, mask=state_mask_2d)
    tl.store(dD_part_ptr + i_s.to(tl.int64) * D_CH + channels, dD, mask=channel_mask)


def scan_forward(x, dt, A, B, C, D, h0, layout: ScanLayout, output_final_state: bool, store_checkpoints: bool):
    """Flat inputs x, dt [tokens, Dch], A [Dch, N] fp32, B, C [tokens, N], D [Dch] fp32 or None, h0 [S, Dch, N]
    fp32 or None -> (y [tokens, Dch] in x's dtype, final state [S, Dch, N] fp32 or None, checkpoints or None)."""
    channels, num_states = A.shape
    BN, BD = state_block(num_states)
    y = new_buffer(x.shape, x.dtype, x.device)
    final = new_buffer((layout.num_seqs, channels, num_states), torch.float32, x.device) if output_final_state else None
    checkpoints = None
    if store_checkpoints:
        checkpoints = new_buffer((layout.checkpoint_slots, channels, num_states), torch.float32, x.device)
    scan_forward_kernel[(triton.cdiv(channels, BD), layout.num_seqs)](
        x, dt, A, B, C, D, h0, y, final, checkpoints, layout.cu_seqlens, layout.tile_offsets,
        D_CH=channels, N=num_states, BN=BN, BD=BD, BT=TILE,
        HAS_D=D is not None, HAS_H0=h0 is not None, STORE_FINAL=output_final_state,
        STORE_CHECKPOINTS=store_checkpoints,
    )
    return y, final, checkpoints


def scan_backward(x, dt, A, B, C, D, dy, checkpoints, d_final, want_dh0: bool, layout: ScanLayout):
    """Gradients of scan_forward's inputs (flat, fp32 except dx and ddt, which take x's and dt's dtypes).
    The dB, dC partials [Dch / BD, tokens, N] fp32 live only during this call: at d_state 16 (BD 16) they hold
    as many bytes as 4 copies of a bf16 x."""
    tokens, channels = x.shape
    num_states = A.shape[1]
    BN, BD = state_block(num_states)
    blocks = triton.cdiv(channels, BD)
    dx = new_buffer(x.shape, x.dtype, x.device)
    ddt = new_buffer(dt.shape, dt.dtype, x.device)
    dB_part = new_buffer((blocks, tokens, num_states), torch.float32, x.device)
    dC_part = new_buffer((blocks, tokens, num_states), torch.float32, x.device)
    dA_part = new_buffer((layout.num_seqs, channels, num_states), torch.float32, x.device)
    dD_part = new_buffer((layout.num_seqs, channels), torch.float32, x.device)
    dh0 = new_buffer((layout.num_seqs, channels, num_states), torch.float32, x.device) if want_dh0 else None
    scan_backward_kernel[(blocks, layout.num_seqs)](
        x, dt, A, B, C, D, dy, checkpoints, d_final, dx, ddt, dB_part, dC_part, dA_part, dD_part, dh0,
        layout.cu_seqlens, layout.tile_offsets, tokens,
        D_CH=channels, N=num_states, BN=BN, BD=BD, BT=TILE,
        HAS_D=D is not None, HAS_DFINAL=d_final is not None, STORE_DH0=want_dh0,
    )
    return dx, ddt, dA_part.sum(0), dB_part.sum(0), dC_part.sum(0), dD_part.sum(0), dh0


def flat_inputs(x, dt, A, B, C, D, initial_state):
    """Contiguous [tokens, width] views of the per-token inputs; A, D and the initial state in fp32."""
    batch, length, _ = x.shape
    x, dt, B, C = (t.reshape(batch * length, t.shape[-1]).contiguous() for t in (x, dt, B, C))
    A = A.float().contiguous()
    D = D.float().contiguous() if D is not None else None
    h0 = initial_state.float().contiguous() if initial_state is not None else None
    return x, dt, A, B, C, D, h0


class SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, initial_state, output_final_state, cu_seqlens):
        batch, length, channels = x.shape
        layout = scan_layout(batch, length, cu_seqlens, x.device)
        flat = flat_inputs(x, dt, A, B, C, D, initial_state)
        y, final, checkpoints = scan_forward(*flat, layout, output_final_state, store_checkpoints=True)
        x_f, dt_f, A_f, B_f, C_f, D_f, _ = flat
        ctx.save_for_backward(x_f, dt_f, A_f, B_f, C_f, D_f, checkpoints)
        ctx.layout, ctx.shape = layout, (batch, length, channels)
        ctx.dtypes = (A.dtype, B.dtype, C.dtype, None if D is None else D.dtype,
                      None if initial_state is None else initial_state.dtype)
        return y.view(batch, length, channels), final

    @staticmethod
    def backward(ctx, dy, d_final):
        x, dt, A, B, C, D, checkpoints = ctx.saved_tensors
        batch, length, channels = ctx.shape
        A_dtype, B_dtype, C_dtype, D_dtype, h0_dtype = ctx.dtypes
        dy = dy.reshape(batch * length, channels).contiguous()
        d_final = d_final.float().contiguous() if d_final is not None else None
        dx, ddt, dA, dB, dC, dD, dh0 = scan_backward(
            x, dt, A, B, C, D, dy, checkpoints, d_final, h0_dtype is not None, ctx.layout)
        num_states = A.shape[1]
        return (
            dx.view(batch, length, channels),
            ddt.view(batch, length, channels),
            dA.to(A_dtype),
            dB.to(B_dtype).view(batch, length, num_states),
            dC.to(C_dtype).view(batch, length, num_states),
            None if D_dtype is None else dD.to(D_dtype),
            None if h0_dtype is None else dh0.to(h0_dtype),
            None,
            None,
        )


def chunk_selective_scan(
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
    """The selective scan over whole sequences in Triton; differentiable in every tensor input.

    Same arguments and layout as `selective_scan_torch`: x, dt [B, T, Dch] (dt after softplus); A [Dch, N]; B, C
    [B, T, N]; D [Dch] or None; initial/final state [S, Dch, N] fp32 (S = B, or the number of cu_seqlens
    sequences, then B = 1). bf16, fp16 or fp32 inputs, d_state up to 64; all arithmetic in fp32. Returns y in x's
    dtype and the final state (None unless output_final_state).
    """
    check_inputs(x, dt, A, B, C, D, initial_state, cu_seqlens)
    inputs = (x, dt, A, B, C, D, initial_state)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
        return SelectiveScan.apply(x, dt, A, B, C, D, initial_state, output_final_state, cu_seqlens)
    batch, length, channels = x.shape
    layout = scan_layout(batch, length, cu_seqlens, x.device)
    y, final, _ = scan_forward(*flat_inputs(*inputs), layout, output_final_state, store_checkpoints=False)
    return y.view(batch, length, channels), final
