"""Short causal depthwise convolution + SiLU over time (the q/k/v convolution of the GDN mixer)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gdn.kernels import short_conv
from gdn.models.documents import positions_in_documents


class ShortConvolution(nn.Module):
    """y_t = SiLU(sum_j w[:, j] x_{t-(K-1)+j}) per channel, no bias; w[:, K-1] weighs the current token.

    Taps that reach before the start of a packed document read zeros, so nothing leaks across documents.
    With a cache (decode), the K-1 inputs before this call stand in for the zeros; the new cache is returned.
    """

    def __init__(self, channels: int, kernel_size: int = 4):
        super().__init__()
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.empty(channels, kernel_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1 / math.sqrt(self.kernel_size)  # nn.Conv1d's default for a depthwise kernel (fan-in = K)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(
        self, x: torch.Tensor, cu_seqlens: torch.Tensor | None = None, cache: torch.Tensor | None = None,
        triton: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, C], cache [B, K-1, C] or None -> (y [B, T, C], the last K-1 inputs as the next cache).
        triton=True runs the fused Triton kernel (its state layout is [B, C, K-1])."""
        if triton:
            initial = None if cache is None else cache.transpose(1, 2)
            y, final = short_conv(x, self.weight, None, "silu", cu_seqlens, initial, output_final_state=True)
            return y, final.transpose(1, 2)
        B, T, C = x.shape
        history = cache if cache is not None else x.new_zeros(B, self.kernel_size - 1, C)
        window = torch.cat([history.to(x.dtype), x], dim=1)  # [B, K-1+T, C]
        if cu_seqlens is None:  # one depthwise conv1d over the window: T outputs, no padding needed
            y = F.conv1d(window.transpose(1, 2), self.weight.to(x.dtype)[:, None, :], groups=C)
            return F.silu(y.transpose(1, 2)), window[:, T:]
        positions = positions_in_documents(cu_seqlens, T)[None, :, None]
        y = torch.zeros_like(x)
        for tap in range(self.kernel_size):
            lag = self.kernel_size - 1 - tap  # this tap reads x_{t-lag}
            term = window[:, tap : tap + T] * self.weight[:, tap].to(x.dtype)
            if lag:
                term = term * (positions >= lag)  # x_{t-lag} belongs to the previous document
            y = y + term
        return F.silu(y), window[:, T:]
