"""Short causal depthwise convolution (+ SiLU) in Triton, with varlen documents and a carried decode state.

Tokens are flattened to rows of [B*T, C]. For a row t of a sequence starting at row s, per channel c:
    pre_t = bias_c + sum_k weight[c, k] * x_{t-W+1+k, c},   y_t = act(pre_t)
where x_j for j < s is slot j - s + W - 1 of the sequence's initial state (its W-1 previous inputs) or zero.

Backward, with dpre_t = dy_t * act'(pre_t) (pre recomputed, never stored):
    dx_j       = sum_k weight[c, k] * dpre_{j+W-1-k}   over the rows j+W-1-k that lie in j's sequence
    dweight_ck = sum_t dpre_t * x_{t-W+1+k},   dbias_c = sum_t dpre_t
The same dx formula at the W-1 rows before a sequence gives the gradient of its initial state.
The backward sees every kernel as 4 taps (a narrower one padded with leading zero taps), so one tile of rows
needs exactly the 7 inputs x_{t-3..t+3} and 4 output gradients dy_{t..t+3}, each loaded once.
"""
from __future__ import annotations

from functools import partial

import torch
import triton
import triton.language as tl

from gdn.kernels.tensor_memo import TensorMemo

MAX_WIDTH = 4
TAP_SLOTS = tl.constexpr(MAX_WIDTH)  # taps every kernel is padded to in the backward; also the state-slot axis

FWD_BLOCK_T, FWD_BLOCK_C = 32, 128  # rows x channels per forward tile
BWD_BLOCK_T, BWD_BLOCK_C = 16, 32  # smaller: 7 inputs, 4 gradients and 5 accumulators live at once (~100 regs)
BWD_TILES_PER_PROGRAM = 8  # row tiles one backward program walks, so weight-gradient partials stay few


@triton.jit
def _sequence_of(rows, row_mask, seq_idx_ptr, cu_seqlens_ptr, seq_len, IS_VARLEN: tl.constexpr):
    """Index, first row and end row of the sequence each row belongs to."""
    if IS_VARLEN:
        seq = tl.load(seq_idx_ptr + rows, mask=row_mask, other=0)
        start = tl.load(cu_seqlens_ptr + seq)
        end = tl.load(cu_seqlens_ptr + seq + 1)
    else:
        seq = rows // seq_len
        start = seq * seq_len
        end = start + seq_len
    return seq, start, end


@triton.jit
def _load_input(x_ptr, state_ptr, rows, valid, seq, start, channels, channel_mask, C,
                WIDTH: tl.constexpr, HAS_STATE: tl.constexpr):
    """x at `rows` as fp32; rows before `start` read the initial state, or zero before it or without one."""
    inside = valid & (rows >= start)
    offsets = rows.to(tl.int64)[:, None] * C + channels[None, :]
    value = tl.load(x_ptr + offsets, mask=inside[:, None] & channel_mask[None, :], other=0.0).to(tl.float32)
    if HAS_STATE:
        slot = rows - start + (WIDTH - 1)
        before = valid & (rows < start) & (slot >= 0)
        state_offsets = (seq.to(tl.int64)[:, None] * C + channels[None, :]) * (WIDTH - 1) + slot[:, None]
        value += tl.load(state_ptr + state_offsets, mask=before[:, None] & channel_mask[None, :],
                         other=0.0).to(tl.float32)
    return value


@triton.jit
def _preactivation(x_ptr, state_ptr, weight_ptr, bias_ptr, rows, valid, seq, start, channels, channel_mask, C,
                   WIDTH: tl.constexpr, HAS_STATE: tl.constexpr, HAS_BIAS: tl.constexpr):
    """bias + sum_k weight[:, k] * x_{rows-W+1+k}, in fp32."""
    pre = tl.zeros((rows.shape[0], channels.shape[0]), dtype=tl.float32)
    for k in tl.static_range(WIDTH):
        tap = tl.load(weight_ptr + channels * WIDTH + k, mask=channel_mask, other=0.0).to(tl.float32)
        source = _load_input(x_ptr, state_ptr, rows - (WIDTH - 1) + k, valid, seq, start, channels, channel_mask,
                             C, WIDTH, HAS_STATE)
        pre += tap[None, :] * source
    if HAS_BIAS:
        pre += tl.load(bias_ptr + channels, mask=channel_mask, other=0.0).to(tl.float32)[None, :]
    return pre


@triton.jit
def _tap(weight_ptr, channels, channel_mask, k: tl.constexpr, WIDTH: tl.constexpr):
    """Tap k of the kernel padded to TAP_SLOTS taps on the left (tap TAP_SLOTS-1 meets the current token)."""
    tap = tl.zeros((channels.shape[0],), dtype=tl.float32)
    if k >= TAP_SLOTS - WIDTH:
        tap = tl.load(weight_ptr + channels * WIDTH + (k - (TAP_SLOTS - WIDTH)), mask=channel_mask, other=0.0)
    return tap.to(tl.float32)[None, :]


@triton.jit
def _preactivation_grad(dy_ptr, pre, out_rows, row_mask, start, end, channels, channel_mask, C,
                        SILU: tl.constexpr):
    """dL/dpre at `out_rows` (zero outside the sequence): dy times SiLU'(pre) = s (1 + pre (1 - s)), s = sigmoid."""
    valid = row_mask & (out_rows >= start) & (out_rows < end)
    offsets = out_rows.to(tl.int64)[:, None] * C + channels[None, :]
    dpre = tl.load(dy_ptr + offsets, mask=valid[:, None] & channel_mask[None, :], other=0.0).to(tl.float32)
    if SILU:
        gate = tl.sigmoid(pre)
        dpre *= gate * (1.0 + pre * (1.0 - gate))
    return dpre


@triton.jit
def _backward_window(x_ptr, state_ptr, weight_ptr, bias_ptr, dy_ptr, rows, row_mask, seq, start, end, channels,
                     channel_mask, C, WIDTH: tl.constexpr, HAS_STATE: tl.constexpr, HAS_BIAS: tl.constexpr,
                     SILU: tl.constexpr):
    """dx at `rows`, dpre at `rows`, and the inputs x_{rows-3..rows} that dpre multiplies in dweight.

    With 4 taps w0..w3 and p_s the preactivation at rows + s (s = 0..3, read from x_{rows+s-3..rows+s}):
        dx = w3 dpre_0 + w2 dpre_1 + w1 dpre_2 + w0 dpre_3
    Inputs past the sequence's end only feed preactivations past it, whose dpre is zero: loaded as zero.
    """
    w0 = _tap(weight_ptr, channels, channel_mask, 0, WIDTH)
    w1 = _tap(weight_ptr, channels, channel_mask, 1, WIDTH)
    w2 = _tap(weight_ptr, channels, channel_mask, 2, WIDTH)
    w3 = _tap(weight_ptr, channels, channel_mask, 3, WIDTH)
    bias = tl.zeros((1, channels.shape[0]), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + channels, mask=channel_mask, other=0.0).to(tl.float32)[None, :]
    x_m3 = _load_input(x_ptr, state_ptr, rows - 3, row_mask, seq, start, channels, channel_mask, C, WIDTH, HAS_STATE)
    x_m2 = _load_input(x_ptr, state_ptr, rows - 2, row_mask, seq, start, channels, channel_mask, C, WIDTH, HAS_STATE)
    x_m1 = _load_input(x_ptr, state_ptr, rows - 1, row_mask, seq, start, channels, channel_mask, C, WIDTH, HAS_STATE)
    x_0 = _load_input(x_ptr, state_ptr, rows, row_mask & (rows < end), seq, start, channels, channel_mask, C,
                      WIDTH, HAS_STATE)
    x_p1 = _load_input(x_ptr, state_ptr, rows + 1, row_mask & (rows + 1 < end), seq, start, channels,
                       channel_mask, C, WIDTH, HAS_STATE)
    x_p2 = _load_input(x_ptr, state_ptr, rows + 2, row_mask & (rows + 2 < end), seq, start, channels,
                       channel_mask, C, WIDTH, HAS_STATE)
    x_p3 = _load_input(x_ptr, state_ptr, rows + 3, row_mask & (rows + 3 < end), seq, start, channels,
                       channel_mask, C, WIDTH, HAS_STATE)
    dpre_0 = _preactivation_grad(dy_ptr, bias + w0 * x_m3 + w1 * x_m2 + w2 * x_m1 + w3 * x_0, rows, row_mask,
                                 start, end, channels, channel_mask, C, SILU)
    dpre_1 = _preactivation_grad(dy_ptr, bias + w0 * x_m2 + w1 * x_m1 + w2 * x_0 + w3 * x_p1, rows + 1, row_mask,
                                 start, end, channels, channel_mask, C, SILU)
    dpre_2 = _preactivation_grad(dy_ptr, bias + w0 * x_m1 + w1 * x_0 + w2 * x_p1 + w3 * x_p2, rows + 2, row_mask,
                                 start, end, channels, channel_mask, C, SILU)
    dpre_3 = _preactivation_grad(dy_ptr, bias + w0 * x_0 + w1 * x_p1 + w2 * x_p2 + w3 * x_p3, rows + 3, row_mask,
                                 start, end, channels, channel_mask, C, SILU)
    dx = w3 * dpre_0 + w2 * dpre_1 + w1 * dpre_2 + w0 * dpre_3
    return dx, dpre_0, x_m3, x_m2, x_m1, x_0


@triton.jit
def _store_tap_grad(dweight_part_ptr, part, channels, channel_mask, C, grad, k: tl.constexpr,
                    WIDTH: tl.constexpr):
    """Write the row-sum of padded tap k's gradient into the partial dweight [C, W], if the kernel has that tap."""
    if k >= TAP_SLOTS - WIDTH:
        offsets = (part.to(tl.int64) * C + channels) * WIDTH + (k - (TAP_SLOTS - WIDTH))
        tl.store(dweight_part_ptr + offsets, tl.sum(grad, axis=0), mask=channel_mask)


@triton.jit
def _short_conv_fwd_kernel(x_ptr, state_ptr, weight_ptr, bias_ptr, y_ptr, seq_idx_ptr, cu_seqlens_ptr,
                           num_rows, seq_len, C, WIDTH: tl.constexpr, HAS_STATE: tl.constexpr,
                           HAS_BIAS: tl.constexpr, SILU: tl.constexpr, IS_VARLEN: tl.constexpr,
                           BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    rows = tl.program_id(0) * BLOCK_T + tl.arange(0, BLOCK_T)
    channels = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    row_mask = rows < num_rows
    channel_mask = channels < C
    seq, start, _ = _sequence_of(rows, row_mask, seq_idx_ptr, cu_seqlens_ptr, seq_len, IS_VARLEN)
    out = _preactivation(x_ptr, state_ptr, weight_ptr, bias_ptr, rows, row_mask, seq, start, channels,
                         channel_mask, C, WIDTH, HAS_STATE, HAS_BIAS)
    if SILU:
        out = out * tl.sigmoid(out)
    offsets = rows.to(tl.int64)[:, None] * C + channels[None, :]
    tl.store(y_ptr + offsets, out.to(y_ptr.dtype.element_ty), mask=row_mask[:, None] & channel_mask[None, :])


@triton.jit
def _short_conv_bwd_kernel(x_ptr, state_ptr, weight_ptr, bias_ptr, dy_ptr, dx_ptr, dweight_part_ptr,
                           dbias_part_ptr, seq_idx_ptr, cu_seqlens_ptr, num_rows, seq_len, C,
                           WIDTH: tl.constexpr, HAS_STATE: tl.constexpr, HAS_BIAS: tl.constexpr,
                           SILU: tl.constexpr, IS_VARLEN: tl.constexpr, BLOCK_T: tl.constexpr,
                           BLOCK_C: tl.constexpr, TILES_PER_PROGRAM: tl.constexpr):
    """dx for TILES_PER_PROGRAM row tiles, plus this program's partial sums of dweight [C, W] and dbias [C]
    (accumulated per element across tiles, summed over rows once at the end)."""
    part = tl.program_id(0)
    channels = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    channel_mask = channels < C
    dw0 = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
    dw1 = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
    dw2 = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
    dw3 = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
    dbias = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
    for tile in range(TILES_PER_PROGRAM):
        rows = (part * TILES_PER_PROGRAM + tile) * BLOCK_T + tl.arange(0, BLOCK_T)
        row_mask = rows < num_rows
        seq, start, end = _sequence_of(rows, row_mask, seq_idx_ptr, cu_seqlens_ptr, seq_len, IS_VARLEN)
        dx, dpre, x_m3, x_m2, x_m1, x_0 = _backward_window(
            x_ptr, state_ptr, weight_ptr, bias_ptr, dy_ptr, rows, row_mask, seq, start, end, channels,
            channel_mask, C, WIDTH, HAS_STATE, HAS_BIAS, SILU)
        offsets = rows.to(tl.int64)[:, None] * C + channels[None, :]
        tl.store(dx_ptr + offsets, dx.to(dx_ptr.dtype.element_ty), mask=row_mask[:, None] & channel_mask[None, :])
        dw0 += dpre * x_m3
        dw1 += dpre * x_m2
        dw2 += dpre * x_m1
        dw3 += dpre * x_0
        dbias += dpre
    _store_tap_grad(dweight_part_ptr, part, channels, channel_mask, C, dw0, 0, WIDTH)
    _store_tap_grad(dweight_part_ptr, part, channels, channel_mask, C, dw1, 1, WIDTH)
    _store_tap_grad(dweight_part_ptr, part, channels, channel_mask, C, dw2, 2, WIDTH)
    _store_tap_grad(dweight_part_ptr, part, channels, channel_mask, C, dw3, 3, WIDTH)
    if HAS_BIAS:
        tl.store(dbias_part_ptr + part.to(tl.int64) * C + channels, tl.sum(dbias, axis=0), mask=channel_mask)


@triton.jit
def _short_conv_state_bwd_kernel(x_ptr, state_ptr, weight_ptr, bias_ptr, dy_ptr, dstate_ptr, cu_seqlens_ptr,
                                 seq_len, C, WIDTH: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr,
                                 IS_VARLEN: tl.constexpr, BLOCK_C: tl.constexpr):
    """Gradient of sequence n's initial state: dx at the W-1 rows just before the sequence starts."""
    seq_id = tl.program_id(0)
    channels = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    channel_mask = channels < C
    slots = tl.arange(0, TAP_SLOTS)
    slot_mask = slots < WIDTH - 1
    if IS_VARLEN:
        start = tl.load(cu_seqlens_ptr + seq_id)
        end = tl.load(cu_seqlens_ptr + seq_id + 1)
    else:
        start = seq_id * seq_len
        end = start + seq_len
    seq = tl.zeros_like(slots) + seq_id
    rows = start - (WIDTH - 1) + slots
    dstate, _, _, _, _, _ = _backward_window(
        x_ptr, state_ptr, weight_ptr, bias_ptr, dy_ptr, rows, slot_mask, seq, tl.zeros_like(slots) + start,
        tl.zeros_like(slots) + end, channels, channel_mask, C, WIDTH, True, HAS_BIAS, SILU)
    offsets = (seq_id.to(tl.int64) * C + channels[None, :]) * (WIDTH - 1) + slots[:, None]
    tl.store(dstate_ptr + offsets, dstate.to(dstate_ptr.dtype.element_ty),
             mask=slot_mask[:, None] & channel_mask[None, :])


def _sequence_index(cu_seqlens: torch.Tensor, num_rows: int) -> torch.Tensor:
    """The sequence each row belongs to, as int32 [num_rows] (output_size avoids a host sync); built once per
    cu_seqlens tensor and shared by every convolution of a step, forward and backward (a handful of launches
    each time otherwise)."""
    return _row_sequences.get(cu_seqlens, num_rows, partial(_build_sequence_index, cu_seqlens, num_rows))


def _build_sequence_index(cu_seqlens: torch.Tensor, num_rows: int) -> torch.Tensor:
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    sequences = torch.arange(len(lengths), device=cu_seqlens.device, dtype=torch.int32)
    return torch.repeat_interleave(sequences, lengths, output_size=num_rows)


# One entry: every layer of a step shares the batch's cu_seqlens tensor (micro-batches come one after the other).
_row_sequences = TensorMemo(size=1)


# torch.library custom ops (see gdn/kernels/gated_delta/chunk.py for why): opaque to torch.compile, and visible to
# op-level selective checkpointing as torch.ops.gdn.short_conv_fwd.default. The backward rebuilds the per-row
# sequence index (one repeat_interleave) rather than returning it from the forward.
@torch.library.custom_op("gdn::short_conv_fwd", mutates_args=())
def short_conv_fwd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   initial_state: torch.Tensor | None, cu_seqlens: torch.Tensor | None, silu: bool) -> torch.Tensor:
    B, T, C = x.shape
    width = weight.shape[1]
    x, weight = x.contiguous(), weight.contiguous()
    seq_idx = None if cu_seqlens is None else _sequence_index(cu_seqlens, T)
    y = torch.empty_like(x)
    grid = (triton.cdiv(B * T, FWD_BLOCK_T), triton.cdiv(C, FWD_BLOCK_C))
    _short_conv_fwd_kernel[grid](
        x, initial_state, weight, bias, y, seq_idx, cu_seqlens, B * T, T, C,
        WIDTH=width, HAS_STATE=initial_state is not None, HAS_BIAS=bias is not None, SILU=silu,
        IS_VARLEN=cu_seqlens is not None, BLOCK_T=FWD_BLOCK_T, BLOCK_C=FWD_BLOCK_C,
    )
    return y


@short_conv_fwd.register_fake
def _(x, weight, bias, initial_state, cu_seqlens, silu):
    return x.new_empty(x.shape)


@torch.library.custom_op("gdn::short_conv_bwd", mutates_args=())
def short_conv_bwd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   initial_state: torch.Tensor | None, cu_seqlens: torch.Tensor | None, silu: bool,
                   dy: torch.Tensor, need_dstate: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> dx, dweight, dbias (empty without a bias), dstate (empty unless need_dstate, with an initial state)."""
    B, T, C = x.shape
    width = weight.shape[1]
    x, weight, dy = x.contiguous(), weight.contiguous(), dy.contiguous()
    seq_idx = None if cu_seqlens is None else _sequence_index(cu_seqlens, T)
    flags = dict(WIDTH=width, HAS_BIAS=bias is not None, SILU=silu, IS_VARLEN=cu_seqlens is not None)
    rows_per_program = BWD_BLOCK_T * BWD_TILES_PER_PROGRAM
    grid = (triton.cdiv(B * T, rows_per_program), triton.cdiv(C, BWD_BLOCK_C))
    dx = torch.empty_like(x)
    dweight_parts = torch.empty(grid[0], C, width, device=x.device, dtype=torch.float32)
    dbias_parts = torch.empty(grid[0], C, device=x.device, dtype=torch.float32) if bias is not None else None
    _short_conv_bwd_kernel[grid](
        x, initial_state, weight, bias, dy, dx, dweight_parts, dbias_parts, seq_idx, cu_seqlens, B * T, T, C,
        HAS_STATE=initial_state is not None, BLOCK_T=BWD_BLOCK_T, BLOCK_C=BWD_BLOCK_C,
        TILES_PER_PROGRAM=BWD_TILES_PER_PROGRAM, **flags,
    )
    dweight = dweight_parts.sum(0).to(weight.dtype)
    dbias = dbias_parts.sum(0).to(bias.dtype) if bias is not None else x.new_empty(0)
    dstate = x.new_empty(0)
    if initial_state is not None and need_dstate:
        dstate = torch.empty_like(initial_state)
        state_grid = (initial_state.shape[0], triton.cdiv(C, BWD_BLOCK_C))
        _short_conv_state_bwd_kernel[state_grid](
            x, initial_state, weight, bias, dy, dstate, cu_seqlens, T, C, BLOCK_C=BWD_BLOCK_C, **flags,
        )
    return dx, dweight, dbias, dstate


@short_conv_bwd.register_fake
def _(x, weight, bias, initial_state, cu_seqlens, silu, dy, need_dstate):
    return (x.new_empty(x.shape), torch.empty_like(weight),
            torch.empty_like(bias) if bias is not None else x.new_empty(0),
            torch.empty_like(initial_state) if initial_state is not None and need_dstate else x.new_empty(0))


def _conv_setup_context(ctx, inputs, output):
    x, weight, bias, initial_state, cu_seqlens, silu = inputs
    ctx.save_for_backward(x, weight, bias, initial_state, cu_seqlens)
    ctx.silu = silu


def _conv_backward(ctx, dy):
    x, weight, bias, initial_state, cu_seqlens = ctx.saved_tensors
    need_dstate = initial_state is not None and ctx.needs_input_grad[3]
    dx, dweight, dbias, dstate = short_conv_bwd(x, weight, bias, initial_state, cu_seqlens, ctx.silu, dy,
                                                need_dstate)
    return dx, dweight, dbias if bias is not None else None, dstate if need_dstate else None, None, None


short_conv_fwd.register_autograd(_conv_backward, setup_context=_conv_setup_context)


def final_conv_state(x: torch.Tensor, initial_state: torch.Tensor | None, cu_seqlens: torch.Tensor | None,
                     width: int) -> torch.Tensor:
    """Each sequence's last W-1 inputs [N, C, W-1], oldest first, reaching into its initial state if short.

    Plain differentiable indexing (a gather of N*(W-1) rows), so autograd carries its gradient to x and the state.
    """
    B, T, C = x.shape
    rows = x.reshape(B * T, C)
    if cu_seqlens is None:
        starts = torch.arange(B, device=x.device) * T
        ends = starts + T
    else:
        starts, ends = cu_seqlens[:-1].long(), cu_seqlens[1:].long()
    positions = ends[:, None] + torch.arange(1 - width, 0, device=x.device)  # [N, W-1]
    from_x = rows[positions.clamp(min=0)].transpose(1, 2)  # [N, C, W-1]
    before_start = (positions < starts[:, None])[:, None, :]
    if initial_state is None:
        carried = torch.zeros_like(from_x)
    else:
        slots = (positions - starts[:, None] + width - 1).clamp(0, width - 2)
        carried = initial_state.to(x.dtype).gather(2, slots[:, None, :].expand_as(from_x))
    return torch.where(before_start, carried, from_x)


def short_conv(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = "silu",
    cu_seqlens: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Causal depthwise conv over time, then SiLU (activation="silu") or nothing (None).

    x [B, T, C]; weight [C, W] with W <= 4; bias [C] or None; cu_seqlens int32 [N+1] (then B == 1) keeps
    documents apart; initial_state [N, C, W-1] holds each sequence's previous W-1 inputs, oldest first.
    Returns y [B, T, C] in x's dtype and, if output_final_state, the state after the last token [N, C, W-1].
    """
    B, T, C = x.shape
    width = weight.shape[-1]
    if weight.shape != (C, width) or not 1 <= width <= MAX_WIDTH:
        raise ValueError(f"short_conv needs weight [C={C}, W] with 1 <= W <= {MAX_WIDTH}, got {tuple(weight.shape)}")
    if activation not in ("silu", None):
        raise ValueError(f"short_conv activation must be 'silu' or None, got {activation!r}")
    if cu_seqlens is not None and B != 1:
        raise ValueError(f"short_conv with cu_seqlens needs batch size 1, got {B}")
    num_seqs = B if cu_seqlens is None else len(cu_seqlens) - 1
    if initial_state is not None:
        if initial_state.shape != (num_seqs, C, width - 1):
            raise ValueError(f"initial_state must be [{num_seqs}, {C}, {width - 1}], got {tuple(initial_state.shape)}")
        initial_state = initial_state.contiguous()
    y = short_conv_fwd(x, weight, bias, initial_state, cu_seqlens, activation == "silu")
    final_state = final_conv_state(x, initial_state, cu_seqlens, width) if output_final_state else None
    return y, final_state
