"""The chunk state-pass and chunk-output kernels without the delta rule: scalar-decay linear attention (the
Mamba2 SSD recurrence S_t = exp(g_t) S_{t-1} + k_t v_t^T, o_t = S_t^T (scale q_t)), forward and backward, against
a float64 step-by-step loop. This is the reuse the kernels are designed for (one family, two operators)."""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel import, as in tests/conftest.py

import pytest
import torch.nn.functional as F

from gdn.kernels.gated_delta import _common
from gdn.kernels.gated_delta._common import CHUNK, chunk_layout
from gdn.kernels.gated_delta._output import output_backward_dv, output_backward_qkw, output_forward
from gdn.kernels.gated_delta._state import state_backward, state_forward

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def nan_filled_buffers(monkeypatch):
    monkeypatch.setattr(_common, "poison_outputs", True)


def scalar_decay_reference(q, k, v, g, h0, scale):
    """Step by step, one sequence [T, H, D]; differentiable by autograd."""
    s, outputs = h0, []
    for t in range(q.shape[0]):
        s = torch.exp(g[t])[:, None, None] * s + k[t][:, :, None] * v[t][:, None, :]
        outputs.append(torch.einsum("hkv,hk->hv", s, q[t] * scale))
    return torch.stack(outputs), s


def chunk_local(x: torch.Tensor, op) -> torch.Tensor:
    """Apply op (a cumsum along dim 0) to each chunk of 64 tokens of x [T, H] separately."""
    return torch.cat([op(piece) for piece in x.split(CHUNK)])


def test_scalar_decay_forward_and_backward_match_float64():
    T, H, K, V, scale = 130, 2, 32, 16, 0.4
    gen = torch.Generator(DEVICE).manual_seed(0)
    q, k, v = (torch.randn(T, H, D, generator=gen, device=DEVICE) for D in (K, K, V))
    k = F.normalize(k, dim=-1)
    g = F.logsigmoid(torch.randn(T, H, generator=gen, device=DEVICE) + 2)
    h0 = torch.randn(1, H, K, V, generator=gen, device=DEVICE)
    do, dht = torch.randn(T, H, V, generator=gen, device=DEVICE), torch.randn(1, H, K, V, generator=gen, device=DEVICE)

    layout = chunk_layout(1, T, None, q.device)
    gc = chunk_local(g, lambda x: x.cumsum(0)).contiguous()
    h, no_v_new, final = state_forward(k, None, v, gc, h0, True, layout)
    o = output_forward(q, k, v, h, gc, scale, layout)
    dv_intra = output_backward_dv(q, k, gc, do, scale, layout)
    dh, dv, dh0 = state_backward(q, k, None, gc, do, dv_intra, dht, scale, True, layout)
    dq, dk, no_dw, dgc = output_backward_qkw(q, k, v, h, dh, gc, do, dv, scale, False, layout)
    dg = chunk_local(dgc, lambda x: x.flip(0).cumsum(0).flip(0))  # gc is a chunk-local cumsum of g
    assert no_v_new is None and no_dw is None

    inputs = [x.double().requires_grad_() for x in (q, k, v, g, h0[0])]
    o_ref, final_ref = scalar_decay_reference(*inputs, scale)
    ((o_ref * do.double()).sum() + (final_ref * dht[0].double()).sum()).backward()
    ours = [o, final[0], dq, dk, dv, dg, dh0[0]]
    expected = [o_ref, final_ref] + [x.grad for x in inputs]
    for name, a, b in zip(["o", "final", "dq", "dk", "dv", "dg", "dh0"], ours, expected):
        assert ((a.double() - b).norm() / b.norm()).item() < 1e-5, name
