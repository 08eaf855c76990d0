"""Mamba1 selective scan (Samba's Mamba layer): the chunked PyTorch path and the step-by-step float64 oracle.

    h_t[d, n] = exp(dt_t[d] A[d, n]) h_{t-1}[d, n] + dt_t[d] B_t[n] x_t[d],   y_t[d] = C_t . h_t[d] + D[d] x_t[d]
Layout: x, dt [B, T, Dch] (dt after softplus); A [Dch, N] (negative); B, C [B, T, N]; D [Dch] or None;
initial/final state [N_seq, Dch, N] in float32 (float64 for float64 inputs); with cu_seqlens (int32 [N_seq+1],
0 ... T) the batch size must be 1. Returns (y [B, T, Dch] in x's dtype, final state or None).
"""
from gdn.kernels.selective_scan.torch_chunk import selective_scan_torch as selective_scan

__all__ = ["selective_scan"]
