"""The SSD against float64 references: outputs, final states, every gradient.

CPU: the chunked PyTorch SSD and the Triton SSD (interpreter) against the step-by-step oracle at small shapes.
GPU (marked `gpu`): the Triton SSD at real Mamba2 shapes in bf16 against the chunked PyTorch SSD in float64 on the
GPU; the measured errors are printed (run with -s to see them).
"""
import pytest
import torch
import torch.nn.functional as F

from gdn.kernels.ssd import chunk_ssd_torch, recurrent_ssd_reference
from tests.kernels import checks
from tests.kernels.checks import DEVICE, assert_within, outputs_and_gradients, relative_error

CHUNK = 16  # small chunks keep the tests fast while T still covers 1, exact and partial chunks


def random_inputs(T, batch=1, H=4, P=6, G=2, N=5, num_states=None, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    inputs = dict(
        x=randn(batch, T, H, P),
        dt=F.softplus(randn(batch, T, H) - 1),  # dt > 0, as after softplus(. + dt_bias)
        A=-torch.rand(H, generator=gen, dtype=torch.float64) * 2 - 0.1,  # A < 0
        B=randn(batch, T, G, N),
        C=randn(batch, T, G, N),
        D=randn(H),
    )
    if num_states is not None:
        inputs["initial_state"] = randn(num_states, H, N, P)
    return {name: t.requires_grad_() for name, t in inputs.items()}


def assert_matches_reference(inputs, chunk_size=CHUNK, **kwargs):
    got, cotangents = outputs_and_gradients(chunk_ssd_torch, inputs, "y", chunk_size=chunk_size, **kwargs)
    want, _ = outputs_and_gradients(recurrent_ssd_reference, inputs, "y", cotangents, **kwargs)
    assert set(got) == set(want) and len(want) == 2 + len(inputs)
    for name in want:
        assert got[name].dtype == torch.float64, name
        assert relative_error(got[name], want[name]) < 1e-5, name


@pytest.mark.parametrize("T", [1, 63, 64, 65, 130])
def test_matches_reference_with_initial_state(T):
    assert_matches_reference(random_inputs(T, num_states=1))


@pytest.mark.parametrize("T", [1, 65])
def test_matches_reference_at_chunk_64(T):
    assert_matches_reference(random_inputs(T, batch=2, H=2, P=3, G=1, N=4, num_states=2), chunk_size=64)


def test_without_initial_state_or_groups():
    assert_matches_reference(random_inputs(37, batch=2, G=1))


def test_one_group_per_head():
    assert_matches_reference(random_inputs(20, G=4, num_states=1))


def test_varlen_uneven_sequences():
    cu_seqlens = torch.tensor([0, 7, 40, 57], dtype=torch.int32)
    assert_matches_reference(random_inputs(57, num_states=3), cu_seqlens=cu_seqlens)


def test_varlen_equals_separate_sequences():
    inputs = {name: t.detach() for name, t in random_inputs(30, num_states=2).items()}
    cu_seqlens = torch.tensor([0, 11, 30], dtype=torch.int32)
    y, final = chunk_ssd_torch(**inputs, cu_seqlens=cu_seqlens, output_final_state=True, chunk_size=CHUNK)
    per_token = {"x", "dt", "B", "C"}
    for n, (start, end) in enumerate([(0, 11), (11, 30)]):
        piece = {name: (t[:, start:end] if name in per_token else t) for name, t in inputs.items()}
        piece["initial_state"] = inputs["initial_state"][n : n + 1]
        y_n, final_n = chunk_ssd_torch(**piece, output_final_state=True, chunk_size=CHUNK)
        torch.testing.assert_close(y[:, start:end], y_n)
        torch.testing.assert_close(final[n : n + 1], final_n)


def test_chunk_size_does_not_change_the_result():
    inputs = random_inputs(45)
    small, _ = chunk_ssd_torch(**inputs, chunk_size=8)
    large, _ = chunk_ssd_torch(**inputs, chunk_size=64)
    assert relative_error(small, large) < 1e-12


def test_low_precision_inputs_compute_in_float32():
    inputs = {name: t.detach() for name, t in random_inputs(20, num_states=1).items()}
    low = {name: t.to(torch.bfloat16) if name in ("x", "B", "C") else t.float() for name, t in inputs.items()}
    y, final = chunk_ssd_torch(**low, output_final_state=True, chunk_size=CHUNK)
    assert y.dtype == torch.bfloat16 and final.dtype == torch.float32
    want, _ = recurrent_ssd_reference(**{name: t.double() for name, t in low.items()})
    assert relative_error(y.double(), want) < 2e-2


def test_rejects_batched_varlen_and_groups_that_do_not_divide_heads():
    with pytest.raises(ValueError, match="batch size 1"):
        chunk_ssd_torch(**random_inputs(8, batch=2), cu_seqlens=torch.tensor([0, 8], dtype=torch.int32))
    with pytest.raises(ValueError, match="divide"):
        chunk_ssd_torch(**random_inputs(8, H=4, G=3))


@pytest.fixture
def nan_filled_buffers(monkeypatch):
    """Kernel output buffers start as NaN: an element a kernel forgets to write fails the comparison."""
    from gdn.kernels.gated_delta import _common

    monkeypatch.setattr(_common, "poison_outputs", True)


def triton_matches_reference(inputs, tolerance, **kwargs):
    """The Triton SSD in float32 against the float64 oracle: outputs, final state, every gradient."""
    from gdn.kernels.ssd.chunk import chunk_ssd

    def chunk_ssd_float32(**tensors):  # float64 in and out, so that both sides draw the same loss weights
        tensors = {name: t.float() if torch.is_tensor(t) and t.is_floating_point() else t
                   for name, t in tensors.items()}
        y, final = chunk_ssd(**tensors)
        return y.double(), final.double()

    got, cotangents = outputs_and_gradients(chunk_ssd_float32, inputs, "y", **kwargs)
    want, _ = outputs_and_gradients(recurrent_ssd_reference, inputs, "y", cotangents, **kwargs)
    for name in want:
        assert relative_error(got[name], want[name]) < tolerance, name


def test_triton_chunk_local_cumsum_restarts_at_every_chunk_and_sequence(nan_filled_buffers):
    from gdn.kernels.gated_delta._common import chunk_layout
    from gdn.kernels.ssd._cumsum import chunk_local_cumsum

    bounds = [0, 37, 170, 171]  # chunks of 64 counted from each sequence's start; a 1-token sequence
    g = torch.randn(bounds[-1], 3, dtype=torch.float64)
    weights = torch.randn_like(g)
    layout = chunk_layout(1, bounds[-1], torch.tensor(bounds, dtype=torch.int32, device=DEVICE), DEVICE)
    gc = chunk_local_cumsum(g.float().to(DEVICE), layout)
    dg = chunk_local_cumsum(weights.float().to(DEVICE), layout, reverse=True)  # the backward of sum_t w_t gc_t
    want_gc, want_dg = torch.empty_like(g), torch.empty_like(g)
    for start, end in zip(bounds, bounds[1:]):
        for c in range(start, end, 64):
            piece = slice(c, min(c + 64, end))
            want_gc[piece] = g[piece].cumsum(0)
            want_dg[piece] = weights[piece].flip(0).cumsum(0).flip(0)  # d/dg_s of sum_t w_t gc_t
    assert relative_error(gc.double().cpu(), want_gc) < 1e-6
    assert relative_error(dg.double().cpu(), want_dg) < 1e-6


@pytest.mark.parametrize("heads,groups", [(6, 2), (16, 1)])
def test_triton_sums_a_groups_heads_over_several_programs(nan_filled_buffers, heads, groups):
    # dB, dC are summed over each group's heads a few heads per program (at most 8): 3 programs of 1 head per group
    # at (6, 2), 2 programs of 8 at (16, 1), their partial sums added after
    triton_matches_reference(random_inputs(70, H=heads, P=16, G=groups, N=16, num_states=1), tolerance=1e-5)


@pytest.mark.parametrize("T", [1, 65, 130])
def test_triton_matches_reference(nan_filled_buffers, T):
    triton_matches_reference(random_inputs(T, H=2, P=16, G=1, N=16, num_states=1), tolerance=1e-5)


def test_triton_without_skip_connection(nan_filled_buffers):
    inputs = random_inputs(70, H=2, P=16, G=1, N=16, num_states=1)
    del inputs["D"]
    triton_matches_reference(inputs, tolerance=1e-5)


def test_triton_varlen_uneven_sequences(nan_filled_buffers):
    cu_seqlens = torch.tensor([0, 7, 80, 97], dtype=torch.int32)
    triton_matches_reference(random_inputs(97, H=2, P=16, G=2, N=16, num_states=3), 1e-5, cu_seqlens=cu_seqlens)


GPU_HALF_TOLERANCE = dict(y=5e-3, final_state=5e-3, dx=8e-3, dinitial_state=8e-3,
                          ddt=2e-2, dA=2e-2, dB=2e-2, dC=2e-2, dD=2e-2)
GPU_CASES = {  # name: (batch, T, heads, headdim P, groups, d_state N, cu_seqlens); 1.3B Mamba2: 64 heads of 64, N 128
    "4x4096x64x64-N128": (4, 4096, 64, 64, 1, 128, None),
    "varlen-16K-x32x64-N128-2groups": (1, 16384, 32, 64, 2, 128, [0, 1000, 5097, 5100, 9000, 13191, 16384]),
}


def gpu_inputs(batch, T, H, P, G, N, num_states, dtype, seed):
    """Mamba2's ranges: dt = softplus(. - 4) (the dt_bias init), A in -[1, 16] (the A_log init); x, B, C in dtype,
    dt, A, D and the initial state in fp32."""
    gen = torch.Generator(DEVICE).manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, device=DEVICE)

    return dict(
        x=randn(batch, T, H, P).to(dtype),
        dt=F.softplus(randn(batch, T, H) - 4.0),
        A=-(1 + 15 * torch.rand(H, generator=gen, device=DEVICE)),
        B=randn(batch, T, G, N).to(dtype),
        C=randn(batch, T, G, N).to(dtype),
        D=randn(H),
        initial_state=randn(num_states, H, N, P),
    )


def gpu_errors(inputs, **kwargs):
    from gdn.kernels.ssd.chunk import chunk_ssd

    return checks.compare(chunk_ssd, chunk_ssd_torch, inputs, "y", **kwargs)


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(GPU_CASES))
def test_gpu_triton_matches_float64_chunked(name):
    batch, T, H, P, G, N, cu_seqlens = GPU_CASES[name]
    num_states = batch if cu_seqlens is None else len(cu_seqlens) - 1
    if cu_seqlens is not None:
        cu_seqlens = torch.tensor(cu_seqlens, dtype=torch.int32, device=DEVICE)
    errors = gpu_errors(gpu_inputs(batch, T, H, P, G, N, num_states, torch.bfloat16, seed=3), cu_seqlens=cu_seqlens)
    print(f"\n[gpu errors] SSD {name} bf16: " + ", ".join(f"{n} {e:.2e}" for n, e in errors.items()))
    assert_within(errors, GPU_HALF_TOLERANCE)


@pytest.mark.gpu
def test_gpu_triton_fp32_matches_float64_chunked():
    errors = gpu_errors(gpu_inputs(2, 1000, 8, 64, 2, 128, 2, torch.float32, seed=4))
    print("\n[gpu errors] SSD 2x1000x8x64 N128 fp32: " + ", ".join(f"{n} {e:.2e}" for n, e in errors.items()))
    assert_within(errors, {name: 1e-4 if name in ("dA", "ddt") else 2e-5 for name in GPU_HALF_TOLERANCE})


def test_triton_backward_keeps_groups_not_heads_and_no_states():
    """The autograd graph of chunk_ssd keeps B and C per group and rebuilds the chunk states in the backward."""
    from gdn.kernels.ssd.chunk import chunk_ssd

    T, H, P, G, N = 130, 4, 16, 1, 32
    inputs = {name: t.detach().float().requires_grad_() for name, t in
              random_inputs(T, H=H, P=P, G=G, N=N, num_states=1).items()}
    shapes = set()

    def pack(t):
        shapes.add(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        chunk_ssd(**inputs)
    per_head_qk, values, states = (T, H, N), (T, H, P), (3, H, N, P)  # flat tokens; 3 chunks of 64
    assert not {per_head_qk, values, states} & shapes and (T, G, N) in shapes, shapes
