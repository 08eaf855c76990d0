"""The Mamba1 sequence mixer, as Samba's Mamba layer (selective SSM, Gu & Dao 2023; Samba, Ren et al. 2024).

    x, z   = split(W_in u)                               expand 2: Dch = 2 d_model each
    x      = SiLU(causal depthwise conv_4(x))
    dt_low, B, C = split(W_x x)                          dt_rank = ceil(d_model / 16), B, C of size d_state
    dt     = softplus(W_dt dt_low + b_dt)                per channel; bias and softplus applied inside the scan
    A      = -exp(A_log)                                 S4D-real init: A[d, n] = -(n + 1)
    h_t    = exp(dt_t A) h_{t-1} + dt_t B_t x_t,  y_t = C_t . h_t + D x_t      (gdn.kernels.selective_scan)
    out    = W_o [ y * SiLU(z) ]                         W_o is Samba's out_proj, named o_proj here
The output projection is `o_proj` so that the language model's residual-scale init applies to it as to every
mixer. One difference from mamba_ssm's layer: the short convolution has no bias (gdn's ShortConvolution).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gdn.kernels.selective_scan import chunk_selective_scan, recurrent_selective_scan, selective_scan_torch
from gdn.models.documents import check_packed
from gdn.models.short_conv import ShortConvolution

BACKENDS = ("auto", "torch", "triton")


@dataclass
class Mamba1State:
    """Decode state: the conv cache [B, conv_size-1, Dch] and the SSM state h [B, Dch, d_state] (fp32)."""

    conv: torch.Tensor | None = None
    ssm: torch.Tensor | None = None


class DtProjection(nn.Module):
    """dt_rank -> Dch projection whose bias sets the initial step size: softplus(bias) = dt, dt log-uniform in
    [dt_min, dt_max] floored at dt_floor; weight ~ U(+-dt_rank^-0.5). Not an nn.Linear, so the language model's
    generic Linear init leaves this init alone. The bias takes no weight decay.

    forward gives W dt_low without the bias: the selective scan adds the bias and applies the softplus as it reads
    dt (dt_bias, dt_softplus), so that autograd keeps no separate fp32 copy of softplus(W dt_low + b)."""

    def __init__(self, dt_rank: int, channels: int, dt_min: float = 1e-3, dt_max: float = 0.1, dt_floor: float = 1e-4):
        super().__init__()
        self.dt_min, self.dt_max, self.dt_floor = dt_min, dt_max, dt_floor
        self.weight = nn.Parameter(torch.empty(channels, dt_rank))
        self.bias = nn.Parameter(torch.empty(channels))
        self.bias._no_weight_decay = True
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            bound = self.weight.shape[1] ** -0.5
            self.weight.uniform_(-bound, bound)
            log_dt = torch.empty_like(self.bias).uniform_(math.log(self.dt_min), math.log(self.dt_max))
            dt = log_dt.exp().clamp(min=self.dt_floor)
            self.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus

    def forward(self, dt_low: torch.Tensor) -> torch.Tensor:
        return F.linear(dt_low, self.weight.to(dt_low.dtype))


class Mamba1(nn.Module):
    """forward(x [B, T, d_model], cu_seqlens=None, state=None) -> (y [B, T, d_model], new state or None).

    backend "auto" runs our Triton kernels (short conv, selective scan; the step-by-step scan for one-token
    decode steps) on CUDA and the PyTorch path elsewhere; "triton" forces them (on the CPU under
    TRITON_INTERPRET=1; no float64); "torch" the PyTorch path (chunk_size applies to it only).
    """

    # Its Triton kernels (short conv, selective scan) are torch.library custom ops: torch.compile traces the mixer
    # whole (gdn.train.parallelize.compile_block).
    triton_kernels_are_torch_ops = True

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        expand: int = 2,
        conv_size: int = 4,
        dt_rank: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_floor: float = 1e-4,
        chunk_size: int = 16,
        backend: str = "auto",
    ):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.d_state, self.chunk_size, self.backend = d_state, chunk_size, backend
        self.channels = expand * d_model
        self.dt_rank = dt_rank or math.ceil(d_model / 16)
        self.in_proj = nn.Linear(d_model, 2 * self.channels, bias=False)
        self.conv = ShortConvolution(self.channels, conv_size)
        self.x_proj = nn.Linear(self.channels, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = DtProjection(self.dt_rank, self.channels, dt_min, dt_max, dt_floor)
        self.A_log = nn.Parameter(torch.empty(self.channels, d_state, dtype=torch.float32))
        self.D = nn.Parameter(torch.empty(self.channels, dtype=torch.float32))
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        self.o_proj = nn.Linear(self.channels, d_model, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """S4D-real: A[d, n] = -(n + 1), stored as A_log = log(n + 1); D = 1."""
        with torch.no_grad():
            states = torch.arange(1, self.d_state + 1, dtype=torch.float32, device=self.A_log.device)
            self.A_log.copy_(states.log().expand(self.channels, -1))
            self.D.fill_(1.0)

    def init_state(self) -> Mamba1State:
        """An empty decode state (zeros), to pass as `state` on the first call."""
        return Mamba1State()

    def forward(
        self, x: torch.Tensor, cu_seqlens: torch.Tensor | None = None, state: Mamba1State | None = None
    ) -> tuple[torch.Tensor, Mamba1State | None]:
        check_packed(x, cu_seqlens)
        if state is not None and cu_seqlens is not None:
            raise ValueError("decode state and cu_seqlens cannot be combined: decode with one row per sequence")
        triton = self.backend == "triton" or (self.backend == "auto" and x.is_cuda)
        inner, z = self.in_proj(x).chunk(2, dim=-1)
        inner, conv_cache = self.conv(inner, cu_seqlens, None if state is None else state.conv, triton)
        dt_low, B, C = self.x_proj(inner).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        scan_dtype = torch.promote_types(x.dtype, torch.float32)
        scan_inputs = dict(
            x=inner, dt=self.dt_proj(dt_low.to(scan_dtype)), A=-self.A_log.exp(), B=B, C=C, D=self.D,
            initial_state=None if state is None else state.ssm,
            output_final_state=state is not None,
            cu_seqlens=cu_seqlens,
            dt_bias=self.dt_proj.bias, dt_softplus=True,  # dt = softplus(W_dt dt_low + b_dt), inside the scan
        )
        if not triton:
            y, ssm = selective_scan_torch(**scan_inputs, chunk_size=self.chunk_size)
        elif state is not None and x.shape[1] == 1:  # a decode step; a prompt goes through the tiled scan
            y, ssm = recurrent_selective_scan(**scan_inputs)
        else:
            y, ssm = chunk_selective_scan(**scan_inputs)
        out = self.o_proj(y * F.silu(z))
        return out, (Mamba1State(conv_cache, ssm) if state is not None else None)
