"""Short causal depthwise convolution in plain PyTorch: the test oracle for `short_conv`.

Per channel c, with W the kernel width and the window x_{t-W+1..t} taken inside the token's own sequence:
    y_t = act(bias_c + sum_k weight[c, k] * x_{t-W+1+k, c})
Positions before a sequence's first token read its carried state (its W-1 previous inputs, oldest first), or zero.
Runs in the dtype it is given (pass float64 for an oracle) and is differentiable through plain autograd.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from gdn.kernels.sequences import sequence_bounds


def short_conv_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: str | None = "silu",
    cu_seqlens: torch.Tensor | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same arguments and layout as `gdn.kernels.short_conv.short_conv`; one Python step per sequence."""
    B, T, C = x.shape
    width = weight.shape[1]
    weight = weight.to(x.dtype)
    outputs, finals = [], []
    for n, (b, start, end) in enumerate(sequence_bounds(cu_seqlens, B, T)):
        if initial_state is None:
            history = x.new_zeros(width - 1, C)
        else:
            history = initial_state[n].to(x.dtype).T
        window = torch.cat([history, x[b, start:end]])  # [W-1+L, C]
        length = end - start
        pre = sum(weight[:, k] * window[k : k + length] for k in range(width))
        if bias is not None:
            pre = pre + bias.to(x.dtype)
        outputs.append(F.silu(pre) if activation == "silu" else pre)
        finals.append(window[len(window) - (width - 1) :].T)
    y = torch.cat(outputs).view(B, T, C)
    return y, torch.stack(finals) if output_final_state else None
