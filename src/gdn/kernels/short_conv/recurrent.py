"""One decode step of the short causal conv: a handful of elementwise ops on [B, C, W], left to PyTorch."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def short_conv_step(
    x_t: torch.Tensor,
    conv_state: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = "silu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advance by one token: x_t [B, C], conv_state [B, C, W-1] (last W-1 inputs, oldest first), weight [C, W].

    Returns (y_t [B, C] in x_t's dtype, the new state [B, C, W-1]); the state passed in is left untouched.
    """
    window = torch.cat([conv_state.to(x_t.dtype), x_t[:, :, None]], dim=-1)  # [B, C, W]
    compute_dtype = torch.promote_types(x_t.dtype, torch.float32)
    pre = (window.to(compute_dtype) * weight.to(compute_dtype)).sum(-1)
    if bias is not None:
        pre = pre + bias.to(compute_dtype)
    y_t = F.silu(pre) if activation == "silu" else pre
    return y_t.to(x_t.dtype), window[:, :, 1:]
