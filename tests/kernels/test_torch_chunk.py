"""The pure-PyTorch chunked gated delta rule against the float64 step-by-step oracle: outputs, states, gradients."""
import pytest
import torch
import torch.nn.functional as F

from gdn.kernels.gated_delta.reference import recurrent_gated_delta_rule_reference
from gdn.kernels.gated_delta.torch_chunk import chunk_gated_delta_rule_torch

CHUNK = 16  # small chunks keep the tests fast while T still hits 0, 1 and several partial chunks


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||, or ||a|| where b is exactly zero (dg of a single token without an initial state)."""
    denominator = b.norm()
    return ((a - b).norm() / denominator if denominator > 0 else a.norm()).item()


def random_inputs(B, T, H=2, K=8, V=12, num_states=None, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    inputs = dict(
        q=randn(B, T, H, K),
        k=F.normalize(randn(B, T, H, K), dim=-1),
        v=randn(B, T, H, V),
        g=F.logsigmoid(randn(B, T, H)),  # decays alpha = exp(g) in (0, 1)
        beta=torch.sigmoid(randn(B, T, H)),
    )
    if num_states is not None:
        inputs["initial_state"] = randn(num_states, H, K, V)
    return {name: x.requires_grad_() for name, x in inputs.items()}


def outputs_and_grads(fn, inputs, seed=1, **kwargs):
    """o, final state and the gradients of a random linear function of both."""
    o, final = fn(**inputs, output_final_state=True, **kwargs)
    gen = torch.Generator().manual_seed(seed)
    loss = (o * torch.randn(o.shape, generator=gen, dtype=o.dtype)).sum()
    loss = loss + (final * torch.randn(final.shape, generator=gen, dtype=final.dtype)).sum()
    grads = torch.autograd.grad(loss, list(inputs.values()))
    return {"o": o, "final": final, **{f"d{name}": grad for name, grad in zip(inputs, grads)}}


def assert_matches_reference(inputs, **kwargs):
    got = outputs_and_grads(chunk_gated_delta_rule_torch, inputs, chunk_size=CHUNK, **kwargs)
    want = outputs_and_grads(recurrent_gated_delta_rule_reference, inputs, **kwargs)
    for name in want:
        assert got[name].dtype == torch.float64, name
        assert relative_error(got[name], want[name]) < 1e-5, name


@pytest.mark.parametrize("T", [1, 15, 16, 17, 40])
def test_matches_reference(T):
    assert_matches_reference(random_inputs(B=2, T=T))


@pytest.mark.parametrize("T", [1, 63, 64, 65, 130])
def test_matches_reference_at_brief_lengths(T):
    assert_matches_reference(random_inputs(B=1, T=T, H=1, K=4, V=4, num_states=1))


def test_initial_state_and_l2norm():
    assert_matches_reference(random_inputs(B=2, T=37, num_states=2), use_qk_l2norm=True)


def test_varlen_uneven_sequences():
    cu_seqlens = torch.tensor([0, 5, 21, 50], dtype=torch.int32)
    assert_matches_reference(random_inputs(B=1, T=50, num_states=3), cu_seqlens=cu_seqlens)


def test_varlen_equals_separate_sequences():
    inputs = random_inputs(B=1, T=30, num_states=2)
    cu_seqlens = torch.tensor([0, 11, 30], dtype=torch.int32)
    o, final = chunk_gated_delta_rule_torch(**inputs, cu_seqlens=cu_seqlens, output_final_state=True, chunk_size=CHUNK)
    for n, (start, end) in enumerate([(0, 11), (11, 30)]):
        piece = {name: x[:, start:end] for name, x in inputs.items() if name != "initial_state"}
        o_n, final_n = chunk_gated_delta_rule_torch(
            **piece, initial_state=inputs["initial_state"][n : n + 1], output_final_state=True, chunk_size=CHUNK
        )
        torch.testing.assert_close(o[:, start:end], o_n)
        torch.testing.assert_close(final[n : n + 1], final_n)


def test_chunk_size_does_not_change_the_result():
    inputs = random_inputs(B=1, T=45)
    small, _ = chunk_gated_delta_rule_torch(**inputs, chunk_size=8)
    large, _ = chunk_gated_delta_rule_torch(**inputs, chunk_size=64)
    assert relative_error(small, large) < 1e-10


def test_low_precision_inputs_compute_in_float32():
    inputs = {name: x.detach().to(torch.bfloat16) for name, x in random_inputs(B=1, T=20).items()}
    inputs["g"], inputs["beta"] = inputs["g"].float(), inputs["beta"].float()
    o, final = chunk_gated_delta_rule_torch(**inputs, output_final_state=True, chunk_size=CHUNK)
    assert o.dtype == torch.bfloat16 and final.dtype == torch.float32
    want, _ = recurrent_gated_delta_rule_reference(**{name: x.double() for name, x in inputs.items()})
    assert relative_error(o.double(), want) < 2e-2


def test_rejects_batched_varlen():
    inputs = random_inputs(B=2, T=8)
    with pytest.raises(ValueError, match="batch size 1"):
        chunk_gated_delta_rule_torch(**inputs, cu_seqlens=torch.tensor([0, 8], dtype=torch.int32))


def test_varlen_under_torch_compile_does_not_recompile_per_batch():
    """Each batch of document-packed text has its own cu_seqlens: the compiled model must not trace the loop over
    sequences anew for each (it took minutes per batch). Same values as eager, and no new graph after the second
    call."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()

    def loss(q, k, v, g, beta, cu_seqlens):
        o, _ = chunk_gated_delta_rule_torch(q, k, v, g, beta, cu_seqlens=cu_seqlens, use_qk_l2norm=True)
        return o.square().sum()

    compiled = torch.compile(loss)
    graphs = []
    for bounds in ([0, 40, 130], [0, 5, 64, 100, 130], [0, 130], [0, 1, 2, 129, 130]):
        gen = torch.Generator().manual_seed(len(bounds))
        q, k, v = (torch.randn(1, 130, 2, 16, generator=gen) for _ in range(3))
        g, beta = -torch.rand(1, 130, 2, generator=gen), torch.rand(1, 130, 2, generator=gen)
        cu = torch.tensor(bounds, dtype=torch.int32)
        torch.testing.assert_close(compiled(q, k, v, g, beta, cu), loss(q, k, v, g, beta, cu))
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[1:] == [graphs[1]] * 3, f"graphs compiled after each batch: {graphs}"


def test_bf16_autocast_leaves_the_fp32_computation_as_it_is():
    # The PyTorch paths of the gated delta rule, the SSD, gated linear attention and the selective scan run with
    # autocast off (gdn.kernels.precision): under bf16 autocast they give exactly what they give without it.
    from gdn.kernels.selective_scan.torch_chunk import selective_scan_torch
    from gdn.kernels.ssd.torch_chunk import chunk_ssd_torch
    from gdn.models.gated_linear_attention import chunk_gated_linear_attention

    delta = {name: x.detach().float() for name, x in random_inputs(1, 40, num_states=1).items()}
    gen = torch.Generator().manual_seed(3)
    x, B, C = (torch.randn(1, 40, *shape, generator=gen) for shape in ((2, 8), (1, 8), (1, 8)))
    dt = torch.rand(1, 40, 2, generator=gen)
    scan_x, scan_dt = torch.randn(1, 40, 6, generator=gen), torch.rand(1, 40, 6, generator=gen)
    calls = {
        "gated delta rule": lambda: chunk_gated_delta_rule_torch(**delta, chunk_size=CHUNK),
        "gated linear attention": lambda: chunk_gated_linear_attention(
            delta["q"], delta["k"], delta["v"], delta["g"], chunk_size=CHUNK),
        "ssd": lambda: chunk_ssd_torch(x, dt, -torch.ones(2), B, C, chunk_size=CHUNK),
        "selective scan": lambda: selective_scan_torch(scan_x, scan_dt, -torch.ones(6, 4), B[..., 0, :4],
                                                       C[..., 0, :4]),
    }
    for name, call in calls.items():
        expected = call()[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = call()[0]
        assert got.dtype == torch.float32 and torch.equal(got, expected), name
