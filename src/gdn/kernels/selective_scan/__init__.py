"""Mamba1 selective scan (Samba's Mamba layer): Triton training and decode kernels, the chunked PyTorch path (the
CPU path) and the step-by-step float64 oracle.

    h_t[d, n] = exp(dt_t[d] A[d, n]) h_{t-1}[d, n] + dt_t[d] B_t[n] x_t[d],   y_t[d] = C_t . h_t[d] + D[d] x_t[d]
Layout: x, dt [B, T, Dch]; A [Dch, N] (negative); B, C [B, T, N]; D [Dch] or None; the step used is dt, or
softplus(dt + dt_bias) with dt_bias [Dch] and dt_softplus=True (mamba_ssm's delta_bias / delta_softplus);
initial/final state [N_seq, Dch, N] in float32 (float64 for float64 inputs on the PyTorch path); with cu_seqlens
(int32 [N_seq+1], 0 ... T) the batch size must be 1. Returns (y [B, T, Dch] in x's dtype, final state or None).

    chunk_selective_scan      Triton, training (fwd + bwd), GPU or TRITON_INTERPRET=1
    recurrent_selective_scan  Triton, token by token (decode)
    selective_scan_torch      chunked PyTorch (chunk_size=16), float64-capable; `selective_scan` is its old name
    selective_scan_reference  step-by-step oracle
"""
from gdn.kernels.selective_scan.chunk import chunk_selective_scan
from gdn.kernels.selective_scan.recurrent import recurrent_selective_scan
from gdn.kernels.selective_scan.reference import selective_scan_reference
from gdn.kernels.selective_scan.torch_chunk import selective_scan_torch

selective_scan = selective_scan_torch

__all__ = [
    "chunk_selective_scan",
    "recurrent_selective_scan",
    "selective_scan",
    "selective_scan_reference",
    "selective_scan_torch",
]
