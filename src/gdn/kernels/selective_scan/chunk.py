"""Mamba1 selective scan in Triton for training: forward, and a backward that recomputes the states from checkpoints.

    h_t[d, n] = a_t[d, n] h_{t-1}[d, n] + u_t[d, n],   a_t = exp(dt_t[d] A[d, n]),  u_t = dt_t[d] B_t[n] x_t[d]
    y_t[d]    = sum_n C_t[n] h_t[d, n] + D[d] x_t[d]

The step size may come raw, dt_t = softplus(dt_raw_t + dt_bias) (dt_bias, dt_softplus; reference.py): the kernels
apply the bias and the softplus as they load dt and multiply its gradient by softplus' = sigmoid, so the
layer keeps no separate fp32 copy of dt for autograd.

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

from gdn.kernels.gated_delta._common import EMPTY, absent, autotune, new_buffer
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
def softplus(v):
    """log(1 + exp(v)) without overflow; below v = -17 it gives 0 where the true value is under 4e-8."""
    return tl.maximum(v, 0.0) + tl.log(1.0 + tl.exp(-tl.abs(v)))


@triton.jit
def _step_sizes(dt_ptr, rows, row_mask, channels, channel_mask, dt_bias, D_CH: tl.constexpr,
                DT_SOFTPLUS: tl.constexpr):
    """dt [BT, BD] as the recurrence uses it (raw + bias, through softplus if asked) and its derivative with
    respect to the raw dt; both zero where masked, so that masked rows have a = 1, u = 0 and pass the state on."""
    mask = row_mask[:, None] & channel_mask[None, :]
    raw = _load_rows(dt_ptr, rows, row_mask, channels, channel_mask, D_CH) + dt_bias[None, :]
    if DT_SOFTPLUS:
        dt = tl.where(mask, softplus(raw), 0.0)
        slope = tl.where(mask, tl.sigmoid(raw), 0.0)
    else:
        dt = tl.where(mask, raw, 0.0)
        slope = tl.where(mask, 1.0, 0.0)
    return dt, slope


@triton.jit
def _forward_inputs(x_ptr, dt_ptr, B_ptr, C_ptr, rows, end, channels, channel_mask, states, state_mask, dt_bias,
                    D_CH: tl.constexpr, N: tl.constexpr, DT_SOFTPLUS: tl.constexpr):
    """x, dt [BT, BD] and B, C [BT, BN] of the tile at `rows` (zero past the sequence's end)."""
    row_mask = rows < end
    x = _load_rows(x_ptr, rows, row_mask, channels, channel_mask, D_CH)
    dt, _ = _step_sizes(dt_ptr, rows, row_mask, channels, channel_mask, dt_bias, D_CH, DT_SOFTPLUS)
    B = _load_rows(B_ptr, rows, row_mask, states, state_mask, N)
    C = _load_rows(C_ptr, rows, row_mask, states, state_mask, N)
    return x, dt, B, C


@triton.jit
def _backward_inputs(checkpoint_ptr, x_ptr, dt_ptr, dy_ptr, B_ptr, C_ptr, first_tile, i_t, start, end, steps,
                     channels, channel_mask, states, state_mask, state_offsets, state_mask_2d, dt_bias,
                     D_CH: tl.constexpr, N: tl.constexpr, BT: tl.constexpr, DT_SOFTPLUS: tl.constexpr):
    """What the backward reads for tile i_t of a sequence: its checkpoint h_in, x, dt and d dt / d raw dt, dy,
    the next token's dt (0, so a_{t+1} = 1, at the tile's last row, whose link to the next tile is the carried
    dh, and past the sequence's end), B and C. All zero for i_t = -1, the tile before the first."""
    # masks compared block by block: Triton 3.9's interpreter turns (block & scalar) masks into int32
    exists = (tl.zeros_like(state_offsets) + i_t) >= 0
    slot = (first_tile + i_t).to(tl.int64) * D_CH * N
    h_in = tl.load(checkpoint_ptr + slot + state_offsets, mask=state_mask_2d & exists, other=0.0)
    rows = start + i_t * BT + steps
    row_mask = (rows >= start) & (rows < end)
    x = _load_rows(x_ptr, rows, row_mask, channels, channel_mask, D_CH)
    dt, dt_slope = _step_sizes(dt_ptr, rows, row_mask, channels, channel_mask, dt_bias, D_CH, DT_SOFTPLUS)
    dy = _load_rows(dy_ptr, rows, row_mask, channels, channel_mask, D_CH)
    next_mask = row_mask & (steps < BT - 1) & (rows + 1 < end)
    dt_next, _ = _step_sizes(dt_ptr, rows + 1, next_mask, channels, channel_mask, dt_bias, D_CH, DT_SOFTPLUS)
    B = _load_rows(B_ptr, rows, row_mask, states, state_mask, N)
    C = _load_rows(C_ptr, rows, row_mask, states, state_mask, N)
    return h_in, x, dt, dt_slope, dy, dt_next, B, C


@triton.jit
def channel_block(channels, states, A_ptr, D_ptr, dt_bias_ptr, D_CH: tl.constexpr, N: tl.constexpr,
                   BD: tl.constexpr, HAS_D: tl.constexpr, HAS_DT_BIAS: tl.constexpr):
    """A program's masks and state offsets, and its channels' constants in fp32: A [BD, BN], the D skip and the
    dt bias [BD] (zeros where absent)."""
    channel_mask, state_mask = channels < D_CH, states < N
    state_offsets = channels[:, None] * N + states[None, :]
    state_mask_2d = channel_mask[:, None] & state_mask[None, :]
    A = tl.load(A_ptr + state_offsets, mask=state_mask_2d, other=0.0).to(tl.float32)
    skip = tl.zeros((BD,), dtype=tl.float32)
    if HAS_D:
        skip += tl.load(D_ptr + channels, mask=channel_mask, other=0.0).to(tl.float32)
    dt_bias = tl.zeros((BD,), dtype=tl.float32)
    if HAS_DT_BIAS:
        dt_bias += tl.load(dt_bias_ptr + channels, mask=channel_mask, other=0.0).to(tl.float32)
    return channel_mask, state_mask, state_offsets, state_mask_2d, A, skip, dt_bias


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
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, dt_bias_ptr, h0_ptr, y_ptr, final_ptr, checkpoint_ptr,
    cu_seqlens_ptr, tile_offsets_ptr,
    D_CH: tl.constexpr, N: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr,
    HAS_D: tl.constexpr, HAS_DT_BIAS: tl.constexpr, DT_SOFTPLUS: tl.constexpr, HAS_H0: tl.constexpr,
    STORE_FINAL: tl.constexpr, STORE_CHECKPOINTS: tl.constexpr,
):
    i_d, i_s = tl.program_id(0), tl.program_id(1)
    start, end = tl.load(cu_seqlens_ptr + i_s), tl.load(cu_seqlens_ptr + i_s + 1)
    channels, states, steps = i_d * BD + tl.arange(0, BD), tl.arange(0, BN), tl.arange(0, BT)
    channel_mask, state_mask, state_offsets, state_mask_2d, A, skip, dt_bias = channel_block(
        channels, states, A_ptr, D_ptr, dt_bias_ptr, D_CH, N, BD, HAS_D, HAS_DT_BIAS)
    h = tl.zeros((BD, BN), dtype=tl.float32)
    if HAS_H0:
        h += tl.load(h0_ptr + i_s.to(tl.int64) * D_CH * N + state_offsets, mask=state_mask_2d, other=0.0)
    first_tile = tl.load(tile_offsets_ptr + i_s)
    # Pipelined by hand: the next tile's inputs are requested before this tile's arithmetic, so that their memory
    # latency overlaps it (Triton's own loop pipelining is for loads that feed tl.dot).
    rows = start + steps
    x, dt, B, C = _forward_inputs(x_ptr, dt_ptr, B_ptr, C_ptr, rows, end, channels, channel_mask, states,
                                  state_mask, dt_bias, D_CH, N, DT_SOFTPLUS)
    for i_t in range(tl.cdiv(end - start, BT)):
        rows_ahead = rows + BT
        x_ahead, dt_ahead, B_ahead, C_ahead = _forward_inputs(
            x_ptr, dt_ptr, B_ptr, C_ptr, rows_ahead, end, channels, channel_mask, states, state_mask, dt_bias,
            D_CH, N, DT_SOFTPLUS)
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
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, dt_bias_ptr, dy_ptr, checkpoint_ptr, dfinal_ptr,
    dx_ptr, ddt_ptr, dB_part_ptr, dC_part_ptr, dA_part_ptr, dD_part_ptr, dbias_part_ptr, dh0_ptr,
    cu_seqlens_ptr, tile_offsets_ptr, num_tokens,
    D_CH: tl.constexpr, N: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr, BT: tl.constexpr,
    HAS_D: tl.constexpr, HAS_DT_BIAS: tl.constexpr, DT_SOFTPLUS: tl.constexpr, HAS_DFINAL: tl.constexpr,
    STORE_DH0: tl.constexpr,
):
    i_d, i_s = tl.program_id(0), tl.program_id(1)
    start, end = tl.load(cu_seqlens_ptr + i_s), tl.load(cu_seqlens_ptr + i_s + 1)
    channels, states, steps = i_d * BD + tl.arange(0, BD), tl.arange(0, BN), tl.arange(0, BT)
    channel_mask, state_mask, state_offsets, state_mask_2d, A, skip, dt_bias = channel_block(
        channels, states, A_ptr, D_ptr, dt_bias_ptr, D_CH, N, BD, HAS_D, HAS_DT_BIAS)
    dh = tl.zeros((BD, BN), dtype=tl.float32)  # dL/dh of the state leaving the current tile, from later tokens
    if HAS_DFINAL:
        dh += tl.load(dfinal_ptr + i_s.to(tl.int64) * D_CH * N + state_offsets, mask=state_mask_2d, other=0.0)
    dA = tl.zeros((BD, BN), dtype=tl.float32)
    dD = tl.zeros((BD,), dtype=tl.float32)
    dbias = tl.zeros((BD,), dtype=tl.float32)
    first_tile = tl.load(tile_offsets_ptr + i_s)
    num_tiles = tl.cdiv(end - start, BT)
    # pipelined by hand as in the forward: the inputs of the tile processed next (the one before) are requested
    # before this tile's arithmetic
    h_in, x, dt, dt_slope, dy, dt_next, B, C = _backward_inputs(
        checkpoint_ptr, x_ptr, dt_ptr, dy_ptr, B_ptr, C_ptr, first_tile, num_tiles - 1, start, end, steps,
        channels, channel_mask, states, state_mask, state_offsets, state_mask_2d, dt_bias, D_CH, N, BT, DT_SOFTPLUS)
    for j in range(num_tiles):
        i_t = num_tiles - 1 - j
        h_in_ahead, x_ahead, dt_ahead, dt_slope_ahead, dy_ahead, dt_next_ahead, B_ahead, C_ahead = _backward_inputs(
            checkpoint_ptr, x_ptr, dt_ptr, dy_ptr, B_ptr, C_ptr, first_tile, i_t - 1, start, end, steps,
            channels, channel_mask, states, state_mask, state_offsets, state_mask_2d, dt_bias, D_CH, N, BT,
            DT_SOFTPLUS)
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
        ddt = (x * g_dot_B + tl.sum(from_decay * A[None, :, :], 2)) * dt_slope  # with respect to the raw dt
        token_offsets = rows.to(tl.int64)[:, None] * D_CH + channels[None, :]
        tl.store(dx_ptr + token_offsets, dx.to(dx_ptr.dtype.element_ty), mask=token_mask)
        tl.store(ddt_ptr + token_offsets, ddt.to(ddt_ptr.dtype.element_ty), mask=token_mask)
        tl.store(dB_part_ptr + part_offsets, tl.sum(g * (dt * x)[:, :, None], 1), mask=part_mask)
        dA += tl.sum(from_decay * dt[:, :, None], 0)
        dD += tl.sum(dy * x, 0)
        dbias += tl.sum(ddt, 0)
        # dL/dh_in = a_first g_first, from the tile's first row
        dt_first = tl.sum(tl.where(steps[:, None] == 0, dt, 0.0), 0)
        g_first = tl.sum(tl.where(steps[:, None, None] == 0, g, 0.0), 0)
        dh = tl.exp(dt_first[:, None] * A) * g_first
        h_in, x, dt, dt_slope, dy = h_in_ahead, x_ahead, dt_ahead, dt_slope_ahead, dy_ahead
        dt_next, B, C = dt_next_ahead, B_ahead, C_ahead
    if STORE_DH0:
        tl.store(dh0_ptr + i_s.to(tl.int64) * D_CH * N + state_offsets, dh, mask=state_mask_2d)
    tl.store(dA_part_ptr + i_s.to(tl.int64) * D_CH * N + state_offsets, dA, mask=state_mask_2d)
    tl.store(dD_part_ptr + i_s.to(tl.int64) * D_CH + channels, dD, mask=channel_mask)
    if HAS_DT_BIAS:
        tl.store(dbias_part_ptr + i_s.to(tl.int64) * D_CH + channels, dbias, mask=channel_mask)


def scan_forward(x, dt, A, B, C, D, h0, dt_bias, dt_softplus: bool, layout: ScanLayout, output_final_state: bool,
                 store_checkpoints: bool):
    """Flat inputs x, dt [tokens, Dch], A [Dch, N] fp32, B, C [tokens, N], D and dt_bias [Dch] fp32 or None,
    h0 [S, Dch, N] fp32 or None -> (y [tokens, Dch] in x's dtype, final state [S, Dch, N] fp32 or None,
    checkpoints or None)."""
    channels, num_states = A.shape
    BN, BD = state_block(num_states)
    y = new_buffer(x.shape, x.dtype, x.device)
    final = new_buffer((layout.num_seqs, channels, num_states), torch.float32, x.device) if output_final_state else None
    checkpoints = None
    if store_checkpoints:
        checkpoints = new_buffer((layout.checkpoint_slots, channels, num_states), torch.float32, x.device)
    scan_forward_kernel[(triton.cdiv(channels, BD), layout.num_seqs)](
        x, dt, A, B, C, D, dt_bias, h0, y, final, checkpoints, layout.cu_seqlens, layout.tile_offsets,
        D_CH=channels, N=num_states, BN=BN, BD=BD, BT=TILE,
        HAS_D=D is not None, HAS_DT_BIAS=dt_bias is not None, DT_SOFTPLUS=dt_softplus, HAS_H0=h0 is not None,
        STORE_FINAL=output_final_state, STORE_CHECKPOINTS=store_checkpoints,
    )
    return y, final, checkpoints


def scan_backward(x, dt, A, B, C, D, dt_bias, dt_softplus: bool, dy, checkpoints, d_final, want_dh0: bool,
                  layout: ScanLayout):
    """Gradients of scan_forward's inputs (flat, fp32 except dx and ddt, which take x's and dt's dtypes; ddt and
    d dt_bias with respect to the raw dt).
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
    dbias_part = new_buffer((layout.num_seqs, channels), torch.float32, x.device) if dt_bias is not None else None
    dh0 = new_buffer((layout.num_seqs, channels, num_states), torch.float32, x.device) if want_dh0 else None
    scan_backward_kernel[(blocks, layout.num_seqs)](
        x, dt, A, B, C, D, dt_bias, dy, checkpoints, d_final, dx, ddt, dB_part, dC_part, dA_part, dD_part,
        dbias_part, dh0, layout.cu_seqlens, layout.tile_offsets, tokens,
        D_CH=channels, N=num_states, BN=BN, BD=BD, BT=TILE,
        HAS_D=D is not None, HAS_DT_BIAS=dt_bias is not None, DT_SOFTPLUS=dt_softplus,
        HAS_DFINAL=d_final is not None, STORE_DH0=want_dh0,
    )
    dbias = dbias_part.sum(0) if dbias_part is not None else None
    return dx, ddt, dA_part.sum(0), dB_part.sum(0), dC_part.sum(0), dD_part.sum(0), dbias, dh0


def flat_inputs(x, dt, A, B, C, D, initial_state, dt_bias):
    """Contiguous [tokens, width] views of the per-token inputs; A, D, the initial state and dt_bias in fp32."""
    batch, length, _ = x.shape
    x, dt, B, C = (t.reshape(batch * length, t.shape[-1]).contiguous() for t in (x, dt, B, C))
    A = A.float().contiguous()
    D, h0, dt_bias = (t.float().contiguous() if t is not None else None for t in (D, initial_state, dt_bias))
    return x, dt, A, B, C, D, h0, dt_bias


# Two torch.library custom ops (namespace gdn, as the GDN and SSD kernels), so that torch.compile traces a Mamba1
# block without a graph break and op-level selective checkpointing can save the scan. The forward op returns the
# per-tile checkpoints beside y and the final state (a custom op's backward sees only its inputs and outputs); their
# row count is scan_layout's bound, known without reading cu_seqlens. Absent tensors travel as empty ones.


def _layout(x: torch.Tensor, cu_seqlens: torch.Tensor | None) -> ScanLayout:
    return scan_layout(x.shape[0], x.shape[1], cu_seqlens, x.device)


@torch.library.custom_op("gdn::selective_scan_fwd", mutates_args=())
def selective_scan_fwd(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, D: torch.Tensor | None,
    initial_state: torch.Tensor | None, output_final_state: bool, cu_seqlens: torch.Tensor | None,
    dt_bias: torch.Tensor | None, dt_softplus: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> y [B, T, Dch] in x's dtype, final state [S, Dch, N] fp32 (empty without output_final_state), the
    checkpoints [slots, Dch, N] fp32 (the state entering every tile)."""
    batch, length, channels = x.shape
    flat = flat_inputs(x, dt, A, B, C, D, initial_state, dt_bias)
    layout = _layout(x, cu_seqlens)
    y, final, checkpoints = scan_forward(*flat, dt_softplus, layout, output_final_state, store_checkpoints=True)
    if cu_seqlens is not None:  # the slots past the last tile (the bound's slack) hold no state: zero, not garbage
        unused = torch.arange(layout.checkpoint_slots, device=x.device) >= layout.tile_offsets[-1]
        checkpoints.masked_fill_(unused[:, None, None], 0.0)
    final = final if final is not None else absent(x)
    return y.view(batch, length, channels), final, checkpoints


@selective_scan_fwd.register_fake
def _(x, dt, A, B, C, D, initial_state, output_final_state, cu_seqlens, dt_bias, dt_softplus):
    batch, length, channels = x.shape
    sequences = batch if cu_seqlens is None else cu_seqlens.shape[0] - 1
    slots = batch * triton.cdiv(length, TILE) if cu_seqlens is None else triton.cdiv(length, TILE) + sequences
    f32 = dict(dtype=torch.float32)
    return (x.new_empty(x.shape), x.new_empty((sequences, *A.shape) if output_final_state else EMPTY, **f32),
            x.new_empty((slots, *A.shape), **f32))


@torch.library.custom_op("gdn::selective_scan_bwd", mutates_args=())
def selective_scan_bwd(
    x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, D: torch.Tensor | None,
    initial_state: torch.Tensor | None, cu_seqlens: torch.Tensor | None, dt_bias: torch.Tensor | None,
    dt_softplus: bool, checkpoints: torch.Tensor, dy: torch.Tensor, d_final: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
           torch.Tensor]:
    """-> dx, ddt, dA, dB, dC, dD, dh0, d dt_bias in their inputs' dtypes (the last three empty where absent)."""
    batch, length, channels = x.shape
    x_f, dt_f, A_f, B_f, C_f, D_f, _, bias_f = flat_inputs(x, dt, A, B, C, D, initial_state, dt_bias)
    dy = dy.reshape(batch * length, channels).contiguous()
    d_final = d_final.float().contiguous() if d_final is not None else None
    dx, ddt, dA, dB, dC, dD, dbias, dh0 = scan_backward(
        x_f, dt_f, A_f, B_f, C_f, D_f, bias_f, dt_softplus, dy, checkpoints, d_final, initial_state is not None,
        _layout(x, cu_seqlens))

    def given(grad, like):  # the gradient in its input's dtype, or a new empty tensor (outputs may not alias)
        return absent(x) if like is None else grad.to(like.dtype)

    return (dx.view(x.shape), ddt.view(dt.shape), dA.to(A.dtype), dB.to(B.dtype).view(B.shape),
            dC.to(C.dtype).view(C.shape), given(dD, D), given(dh0, initial_state), given(dbias, dt_bias))


@selective_scan_bwd.register_fake
def _(x, dt, A, B, C, D, initial_state, cu_seqlens, dt_bias, dt_softplus, checkpoints, dy, d_final):
    def like(t):
        return absent(x) if t is None else t.new_empty(t.shape)

    return (x.new_empty(x.shape), dt.new_empty(dt.shape), A.new_empty(A.shape), B.new_empty(B.shape),
            C.new_empty(C.shape), like(D), like(initial_state), like(dt_bias))


def _setup_context(ctx, inputs, output):
    x, dt, A, B, C, D, initial_state, output_final_state, cu_seqlens, dt_bias, dt_softplus = inputs
    ctx.save_for_backward(x, dt, A, B, C, D, initial_state, cu_seqlens, dt_bias, output[2])
    ctx.output_final_state, ctx.dt_softplus = output_final_state, dt_softplus
    ctx.set_materialize_grads(False)  # the checkpoints output gets None, not a zero tensor of its size, as gradient


def _backward(ctx, dy, d_final, _d_checkpoints):
    x, dt, A, B, C, D, initial_state, cu_seqlens, dt_bias, checkpoints = ctx.saved_tensors
    if dy is None:  # only the final state reaches the loss
        dy = torch.zeros_like(x)
    dx, ddt, dA, dB, dC, dD, dh0, dbias = selective_scan_bwd(
        x, dt, A, B, C, D, initial_state, cu_seqlens, dt_bias, ctx.dt_softplus, checkpoints, dy.contiguous(),
        d_final if ctx.output_final_state else None)
    return (dx, ddt, dA, dB, dC, None if D is None else dD, None if initial_state is None else dh0, None, None,
            None if dt_bias is None else dbias, None)


selective_scan_fwd.register_autograd(_backward, setup_context=_setup_context)


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
    dt_bias: torch.Tensor | None = None,
    dt_softplus: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The selective scan over whole sequences in Triton; differentiable in every tensor input.

    Same arguments and layout as `selective_scan_torch`: x, dt [B, T, Dch]; A [Dch, N]; B, C [B, T, N]; D [Dch]
    or None; initial/final state [S, Dch, N] fp32 (S = B, or the number of cu_seqlens sequences, then B = 1);
    the recurrence's step is softplus(dt + dt_bias) with dt_softplus, else dt (+ dt_bias). bf16, fp16 or fp32
    inputs, d_state up to 64; all arithmetic in fp32. Returns y in x's dtype and the final state (None unless
    output_final_state).
    """
    check_inputs(x, dt, A, B, C, D, initial_state, cu_seqlens, dt_bias)
    inputs = (x, dt, A, B, C, D, initial_state)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (*inputs, dt_bias)):
        y, final, _checkpoints = selective_scan_fwd(*inputs, output_final_state, cu_seqlens, dt_bias, dt_softplus)
        return y, (final if output_final_state else None)
    batch, length, channels = x.shape
    layout = scan_layout(batch, length, cu_seqlens, x.device)
    flat = flat_inputs(*inputs, dt_bias)
    y, final, _ = scan_forward(*flat, dt_softplus, layout, output_final_state, store_checkpoints=False)
    return y.view(batch, length, channels), final
