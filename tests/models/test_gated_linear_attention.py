"""The chunked gated linear attention (use_delta=False ablation) against a step-by-step loop, with gradients."""
import pytest
import torch
import torch.nn.functional as F

from gdn.models.gated_linear_attention import chunk_gated_linear_attention


def step_by_step(q, k, v, g, initial_state, bounds):
    """S_t = exp(g_t) S_{t-1} + k_t v_t^T, o_t = S_t^T q_t / sqrt(K), row 0 split at `bounds` (one state each)."""
    scale = q.shape[-1] ** -0.5
    outputs, finals = [], []
    for n, (start, end) in enumerate(zip(bounds[:-1], bounds[1:])):
        S = initial_state[n]
        for t in range(start, end):
            S = g[0, t].exp()[:, None, None] * S + k[0, t][:, :, None] * v[0, t][:, None, :]
            outputs.append(torch.einsum("hkv,hk->hv", S, scale * q[0, t]))
        finals.append(S)
    return torch.stack(outputs)[None], torch.stack(finals)


def random_inputs(T, num_states, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = {"q": (1, T, 2, 4), "k": (1, T, 2, 4), "v": (1, T, 2, 6), "g": (1, T, 2)}
    shapes["initial_state"] = (num_states, 2, 4, 6)
    inputs = {name: torch.randn(shape, generator=gen, dtype=torch.float64) for name, shape in shapes.items()}
    inputs["g"] = F.logsigmoid(inputs["g"])
    return {name: x.requires_grad_() for name, x in inputs.items()}


def values_and_grads(o, final, inputs):
    gen = torch.Generator().manual_seed(7)
    loss = sum((t * torch.randn(t.shape, generator=gen, dtype=t.dtype)).sum() for t in (o, final))
    return [o, final, *torch.autograd.grad(loss, list(inputs.values()))]


@pytest.mark.parametrize("T, bounds", [(1, [0, 1]), (21, [0, 21]), (30, [0, 4, 13, 30])])
def test_matches_step_by_step(T, bounds):
    inputs = random_inputs(T, num_states=len(bounds) - 1)
    cu_seqlens = torch.tensor(bounds, dtype=torch.int32) if len(bounds) > 2 else None
    got = values_and_grads(
        *chunk_gated_linear_attention(**inputs, output_final_state=True, cu_seqlens=cu_seqlens, chunk_size=8), inputs
    )
    want = values_and_grads(*step_by_step(**inputs, bounds=bounds), inputs)
    for name, a, b in zip(["o", "final", "dq", "dk", "dv", "dg", "dh0"], got, want):
        assert ((a - b).norm() / b.norm()).item() < 1e-10, name
