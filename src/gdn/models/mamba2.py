"""The Mamba2 sequence mixer, laid out as mamba_ssm's `Mamba2` (Dao & Gu 2024), on our own SSD operator.

    z, xBC, dt_raw = split(W_in u)                       in_proj: d_inner, d_inner + 2 G N, H channels
    x, B, C = split(SiLU(conv(xBC)))                    depthwise causal conv (kernel 4) over the concatenation
    dt = softplus(dt_raw + dt_bias),  A = -exp(A_log)    per head, fp32; no dt clamp (mamba_ssm's dt_limit (0, inf))
    h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t^T,  y_t = C_t^T h_t + D x_t           the SSD, per head
    out = W_o RMSNorm(y * SiLU(z))                        gate first, then norm: RMSNormGated(norm_before_gate=False)
d_inner = expand * d_model, H = d_inner / headdim heads; the G = ngroups groups of B, C serve H / G heads each.
Names follow mamba_ssm except o_proj (its out_proj): the LM's residual-scale init looks for `mixer.o_proj`.
One difference: the short convolution has no bias (mamba_ssm's conv1d has one); it is the shared
`ShortConvolution`, which is bias-free like the GDN layer's.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gdn.kernels import gated_rms_norm
from gdn.kernels.ssd import chunk_ssd, chunk_ssd_torch
from gdn.kernels.ssd.reference import check_groups
from gdn.models.documents import check_packed
from gdn.models.short_conv import ShortConvolution

BACKENDS = ("auto", "torch", "triton")


@dataclass
class Mamba2State:
    """Decode state: the SSM state [B, H, d_state, headdim] and the xBC convolution cache [B, d_conv-1, conv_dim]."""

    ssm: torch.Tensor | None = None
    conv: torch.Tensor | None = None


class GroupedGatedRMSNorm(nn.Module):
    """y = RMSNorm(x * SiLU(z)) * w, the mean square taken over groups of dim / ngroups channels (mamba_ssm's
    RMSNormGated with norm_before_gate=False and group_size = d_inner / ngroups). Statistics in float32."""

    def __init__(self, dim: int, ngroups: int = 1, eps: float = 1e-5):
        super().__init__()
        self.ngroups, self.eps = ngroups, eps
        self.weight = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor, z: torch.Tensor, triton: bool = False) -> torch.Tensor:
        if triton and self.ngroups == 1:  # one fused kernel each way, keeping only x and z
            return gated_rms_norm(x, z, self.weight, self.eps, norm_before_gate=False)
        wide = torch.promote_types(x.dtype, torch.float32)
        gated = (x.to(wide) * F.silu(z.to(wide))).unflatten(-1, (self.ngroups, -1))
        normalized = (gated * torch.rsqrt(gated.pow(2).mean(-1, keepdim=True) + self.eps)).flatten(-2)
        return (normalized * self.weight.to(wide)).to(x.dtype)


class Mamba2(nn.Module):
    """forward(x [B, T, d_model], cu_seqlens=None, state=None) -> (y [B, T, d_model], new state or None).

    backend "auto" runs our Triton kernels (short conv, SSD) on CUDA and the PyTorch path elsewhere; "triton"
    forces them (on the CPU under TRITON_INTERPRET=1; no float64), "torch" the PyTorch path (chunk_size applies).
    """

    # Its Triton kernels (short conv, SSD, gated RMSNorm) are torch.library custom ops: torch.compile traces the
    # mixer whole (gdn.train.parallelize.compile_block).
    triton_kernels_are_torch_ops = True

    def __init__(
        self,
        d_model: int,
        d_state: int = 128,
        d_conv: int = 4,
        expand: int = 2,
        headdim: int = 64,
        ngroups: int = 1,
        A_init_range: tuple[float, float] = (1.0, 16.0),
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        chunk_size: int = 64,
        norm_eps: float = 1e-5,
        backend: str = "auto",
    ):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        d_inner = expand * d_model
        if d_inner % headdim:
            raise ValueError(f"expand * d_model = {d_inner} must be a multiple of headdim {headdim}")
        num_heads = d_inner // headdim
        check_groups(ngroups, num_heads)
        self.d_inner, self.d_state, self.headdim, self.ngroups, self.num_heads = (
            d_inner, d_state, headdim, ngroups, num_heads)
        self.A_init_range, self.dt_range, self.dt_init_floor = tuple(A_init_range), (dt_min, dt_max), dt_init_floor
        self.chunk_size, self.backend = chunk_size, backend
        conv_dim = d_inner + 2 * ngroups * d_state

        self.in_proj = nn.Linear(d_model, d_inner + conv_dim + num_heads, bias=False)  # z, xBC, dt
        self.conv = ShortConvolution(conv_dim, d_conv)
        self.A_log = nn.Parameter(torch.empty(num_heads, dtype=torch.float32))
        self.dt_bias = nn.Parameter(torch.empty(num_heads, dtype=torch.float32))
        self.D = nn.Parameter(torch.empty(num_heads, dtype=torch.float32))
        for param in (self.A_log, self.dt_bias, self.D):
            param._no_weight_decay = True
        self.norm = GroupedGatedRMSNorm(d_inner, ngroups, norm_eps)
        self.o_proj = nn.Linear(d_inner, d_model, bias=False)  # mamba_ssm's out_proj
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """mamba_ssm's init: A ~ U(A_init_range); dt log-uniform in [dt_min, dt_max] floored at dt_init_floor,
        dt_bias = softplus^-1(dt); D = 1."""
        with torch.no_grad():
            self.A_log.copy_(torch.empty_like(self.A_log).uniform_(*self.A_init_range).log())
            log_dt_min, log_dt_max = (math.log(bound) for bound in self.dt_range)
            dt = torch.empty_like(self.dt_bias).uniform_(log_dt_min, log_dt_max).exp().clamp(min=self.dt_init_floor)
            self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus(dt_bias) = dt
            self.D.fill_(1.0)

    def init_state(self) -> Mamba2State:
        """An empty decode state (zeros), to pass as `state` on the first call."""
        return Mamba2State()

    def forward(
        self, x: torch.Tensor, cu_seqlens: torch.Tensor | None = None, state: Mamba2State | None = None
    ) -> tuple[torch.Tensor, Mamba2State | None]:
        check_packed(x, cu_seqlens)
        if state is not None and cu_seqlens is not None:
            raise ValueError("decode state and cu_seqlens cannot be combined: decode with one row per sequence")
        z, xBC, dt_raw = self.in_proj(x).split([self.d_inner, self.conv.weight.shape[0], self.num_heads], dim=-1)
        triton = self.backend == "triton" or (self.backend == "auto" and x.is_cuda)
        xBC, conv_cache = self.conv(xBC, cu_seqlens, None if state is None else state.conv, triton)
        group_channels = self.ngroups * self.d_state
        x_heads, B, C = xBC.split([self.d_inner, group_channels, group_channels], dim=-1)
        gate_dtype = torch.promote_types(x.dtype, torch.float32)
        ssd_inputs = dict(
            x=x_heads.unflatten(-1, (self.num_heads, self.headdim)),
            dt=F.softplus(dt_raw.to(gate_dtype) + self.dt_bias),
            A=-torch.exp(self.A_log.to(gate_dtype)),
            B=B.unflatten(-1, (self.ngroups, self.d_state)),
            C=C.unflatten(-1, (self.ngroups, self.d_state)),
            D=self.D,
            initial_state=None if state is None else state.ssm,
            output_final_state=state is not None,
            cu_seqlens=cu_seqlens,
        )
        if triton:
            y, ssm = chunk_ssd(**ssd_inputs)
        else:
            y, ssm = chunk_ssd_torch(**ssd_inputs, chunk_size=self.chunk_size)
        out = self.o_proj(self.norm(y.flatten(-2), z, triton))
        return out, (Mamba2State(ssm, conv_cache) if state is not None else None)
