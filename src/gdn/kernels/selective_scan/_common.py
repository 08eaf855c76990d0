"""Shared plumbing of the Triton selective scan: tile sizes, where the sequences and their tiles lie, input checks.

Every kernel sees the input as one flat token axis: x, dt [tokens, Dch], B, C [tokens, N]; a dense batch [B, T] is
B sequences of length T back to back, so dense and varlen inputs share one code path (cu_seqlens).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from gdn.kernels.gated_delta._common import interpreting

TILE = 16  # tokens per tile: scanned at once in registers; the state entering each tile is the backward's checkpoint
# channels x padded states per program (BD * BN): 16 channels at d_state 16. A 16 x 16 x 16 tile keeps the backward
# at 170 registers a thread with 8 warps and no spills (ptxas, sm_90); 32-token tiles spill there.
TILE_STATES = 256
MAX_STATES = 64


def state_block(num_states: int) -> tuple[int, int]:
    """(BN, BD): the padded d_state and the channels per program, BD * BN = TILE_STATES."""
    padded = triton.next_power_of_2(num_states)
    return padded, max(1, TILE_STATES // padded)


@dataclass(frozen=True)
class ScanLayout:
    """cu_seqlens: int32 [S + 1], sequence s spans tokens [cu_seqlens[s], cu_seqlens[s + 1]).
    tile_offsets: int32 [S + 1], the checkpoint slot of each sequence's first tile (its tiles follow in order).
    checkpoint_slots: an upper bound of the number of tiles, cdiv(tokens, TILE) + S, known without reading
    cu_seqlens (which would wait for the GPU)."""

    cu_seqlens: torch.Tensor
    tile_offsets: torch.Tensor
    num_seqs: int
    checkpoint_slots: int


def scan_layout(batch: int, length: int, cu_seqlens: torch.Tensor | None, device: torch.device) -> ScanLayout:
    if cu_seqlens is None:
        seqs = torch.arange(batch + 1, dtype=torch.int32, device=device)
        per_seq = triton.cdiv(length, TILE)
        return ScanLayout(seqs * length, seqs * per_seq, batch, batch * per_seq)
    cu = cu_seqlens.to(device=device, dtype=torch.int32)
    tiles = (cu[1:] - cu[:-1] + TILE - 1) // TILE
    offsets = torch.cat([cu.new_zeros(1), tiles.cumsum(0)]).to(torch.int32)
    num_seqs = cu.numel() - 1
    return ScanLayout(cu, offsets, num_seqs, triton.cdiv(length, TILE) + num_seqs)


def check_inputs(x, dt, A, B, C, D, initial_state, cu_seqlens, dt_bias=None) -> None:
    """Raise ValueError for anything outside the kernels' limits (shapes, dtypes, d_state <= 64). The values of
    cu_seqlens are not checked (reading them would wait for the GPU); they must rise from 0 to T."""
    if x.dim() != 3:
        raise ValueError(f"x must be [B, T, Dch]; got {tuple(x.shape)}")
    batch, length, channels = x.shape
    if dt.shape != x.shape:
        raise ValueError(f"dt must be [B, T, Dch] = {tuple(x.shape)} like x; got {tuple(dt.shape)}")
    if A.dim() != 2 or A.shape[0] != channels:
        raise ValueError(f"A must be [Dch, N] with Dch = {channels}; got {tuple(A.shape)}")
    num_states = A.shape[1]
    if not 1 <= num_states <= MAX_STATES:
        raise ValueError(f"d_state N = {num_states} is outside the supported range 1..{MAX_STATES}")
    for name, t in (("B", B), ("C", C)):
        if t.shape != (batch, length, num_states):
            raise ValueError(f"{name} must be [B, T, N] = {(batch, length, num_states)}; got {tuple(t.shape)}")
    for name, t in (("D", D), ("dt_bias", dt_bias)):
        if t is not None and t.shape != (channels,):
            raise ValueError(f"{name} must be [Dch] = ({channels},); got {tuple(t.shape)}")
    named = (("x", x), ("dt", dt), ("A", A), ("B", B), ("C", C), ("D", D), ("initial_state", initial_state),
             ("dt_bias", dt_bias))
    for name, t in named:
        if t is not None and t.dtype not in (torch.bfloat16, torch.float16, torch.float32):
            raise ValueError(f"{name} must be bf16, fp16 or fp32 (the Triton scan has no float64); got {t.dtype}")
    if cu_seqlens is not None:
        if batch != 1:
            raise ValueError(f"with cu_seqlens the batch size must be 1; got {batch}")
        if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2 or cu_seqlens.is_floating_point():
            raise ValueError(f"cu_seqlens must be an integer vector [S + 1] from 0 to T; got {tuple(cu_seqlens.shape)}")
    num_seqs = batch if cu_seqlens is None else cu_seqlens.numel() - 1
    if initial_state is not None and initial_state.shape != (num_seqs, channels, num_states):
        raise ValueError(f"initial_state must be [S, Dch, N] = {(num_seqs, channels, num_states)}; "
                         f"got {tuple(initial_state.shape)}")


def _vectorize_interpreter_scans() -> None:
    """Triton's CPU interpreter (3.9) runs an associative_scan with a custom combine one element at a time in
    Python, about 0.1 ms an element (a 32 x 16 x 16 tile: ~1 s). Patched to apply the same combine to whole
    slices, position by position along the scan axis: the same operations in the same order, ~1000x faster."""
    import numpy as np
    from triton.runtime import interpreter

    def generic_scan(self, inputs):
        slices = [np.moveaxis(arg.handle.data, self.axis, 0) for arg in inputs]
        dtypes = [arg.dtype for arg in inputs]
        outputs = [np.empty_like(s) for s in slices]
        accumulated = None
        for i in range(slices[0].shape[0]):
            step = tuple(self.to_tensor(s[i], dtype) for s, dtype in zip(slices, dtypes))
            if accumulated is None:
                accumulated = step
            else:
                combined = self.combine_fn.fn(*accumulated, *step)
                accumulated = combined if isinstance(combined, tuple) else (combined,)
            for out, value in zip(outputs, accumulated):
                out[i] = np.reshape(value.handle.data, out[i].shape)
        return [self.to_tensor(np.moveaxis(out, 0, self.axis), dtype) for out, dtype in zip(outputs, dtypes)]

    interpreter.ScanOps.generic_scan = generic_scan


if interpreting():
    _vectorize_interpreter_scans()
