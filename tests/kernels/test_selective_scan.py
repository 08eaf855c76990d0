"""The chunked PyTorch selective scan against the float64 step-by-step oracle: outputs, final state, gradients."""
import pytest
import torch
import torch.nn.functional as F

from gdn.kernels.selective_scan import selective_scan
from gdn.kernels.selective_scan.reference import selective_scan_reference
from tests.kernels.checks import outputs_and_gradients, relative_error

CHANNELS, STATES = 6, 4


def random_inputs(batch, length, num_states=None, seed=0):
    gen = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    inputs = dict(
        x=randn(batch, length, CHANNELS),
        dt=F.softplus(randn(batch, length, CHANNELS) - 1),  # dt > 0, as after the layer's softplus
        A=-torch.rand(CHANNELS, STATES, generator=gen, dtype=torch.float64) * 4 - 0.1,  # A < 0
        B=randn(batch, length, STATES),
        C=randn(batch, length, STATES),
        D=randn(CHANNELS),
    )
    if num_states is not None:
        inputs["initial_state"] = randn(num_states, CHANNELS, STATES)
    return {name: t.requires_grad_() for name, t in inputs.items()}


def assert_matches_reference(inputs, chunk_size=16, **kwargs):
    got, cotangents = outputs_and_gradients(selective_scan, inputs, "y", chunk_size=chunk_size, **kwargs)
    want, _ = outputs_and_gradients(selective_scan_reference, inputs, "y", cotangents, **kwargs)
    for name in want:
        assert got[name].dtype == torch.float64, name
        assert relative_error(got[name], want[name]) < 1e-5, name


@pytest.mark.parametrize("T", [1, 63, 64, 65, 130])
def test_matches_reference(T):
    assert_matches_reference(random_inputs(batch=2, length=T, num_states=2))


def test_matches_reference_without_initial_state_or_skip():
    inputs = random_inputs(batch=1, length=40)
    del inputs["D"]
    assert_matches_reference(inputs, chunk_size=8)


def test_matches_reference_with_dt_bias_and_softplus_inside():
    inputs = random_inputs(batch=2, length=37, num_states=2)
    inputs["dt_bias"] = torch.randn(CHANNELS, dtype=torch.float64).requires_grad_()
    assert_matches_reference(inputs, chunk_size=8, dt_softplus=True)


def test_varlen_three_uneven_sequences_with_initial_states():
    cu_seqlens = torch.tensor([0, 7, 40, 58], dtype=torch.int32)
    assert_matches_reference(random_inputs(batch=1, length=58, num_states=3), cu_seqlens=cu_seqlens)


def test_varlen_equals_separate_sequences():
    cu_seqlens = torch.tensor([0, 5, 21, 30], dtype=torch.int32)
    inputs = {k: v.detach() for k, v in random_inputs(batch=1, length=30, num_states=3).items()}
    packed, packed_final = selective_scan(**inputs, cu_seqlens=cu_seqlens, output_final_state=True)
    for seq, (start, end) in enumerate(zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist())):
        part = {k: (v[:, start:end] if v.dim() == 3 and k != "initial_state" else v) for k, v in inputs.items()}
        part["initial_state"] = inputs["initial_state"][seq : seq + 1]
        alone, alone_final = selective_scan(**part, output_final_state=True)
        torch.testing.assert_close(packed[:, start:end], alone, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(packed_final[seq], alone_final[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunk_size", [1, 5, 16, 64])
def test_chunk_size_does_not_change_the_result(chunk_size):
    inputs = {k: v.detach() for k, v in random_inputs(batch=2, length=37, num_states=2).items()}
    y, final = selective_scan(**inputs, output_final_state=True, chunk_size=chunk_size)
    y_ref, final_ref = selective_scan_reference(**inputs, output_final_state=True)
    assert relative_error(y, y_ref) < 1e-10 and relative_error(final, final_ref) < 1e-10


def test_float32_inputs_keep_their_dtype_and_a_float32_state():
    inputs = {k: v.detach().float() for k, v in random_inputs(batch=2, length=33, num_states=2).items()}
    y, final = selective_scan(**inputs, output_final_state=True)
    assert y.dtype == torch.float32 and final.dtype == torch.float32
    y_ref, _ = selective_scan_reference(**{k: v.double() for k, v in inputs.items()})
    assert relative_error(y.double(), y_ref) < 1e-5


def test_strong_decay_stays_finite():
    """Large dt * |A| (deep decay within a chunk) must not overflow: decays are only formed as c_i - c_j, j <= i."""
    inputs = {k: v.detach() for k, v in random_inputs(batch=1, length=32).items()}
    inputs["dt"] = inputs["dt"] * 0 + 30.0
    inputs = {k: v.float().requires_grad_() for k, v in inputs.items()}
    y, _ = selective_scan(**inputs)
    grads = torch.autograd.grad(y.sum(), list(inputs.values()))
    assert torch.isfinite(y).all() and all(torch.isfinite(g).all() for g in grads)


def test_backward_keeps_chunk_boundary_states_not_every_state():
    """Autograd saves far less than the T * Dch * N values of all h_t: chunks are recomputed in the backward."""
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    inputs = random_inputs(batch=1, length=128)
    A = (-torch.rand(CHANNELS, 16, dtype=torch.float64)).requires_grad_()
    B, C = (torch.randn(1, 128, 16, dtype=torch.float64).requires_grad_() for _ in range(2))
    inputs.update(A=A, B=B, C=C)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y, _ = selective_scan(**inputs, chunk_size=16)
    assert sum(saved) < 128 * CHANNELS * 16  # inputs + 8 boundary states; every h_t alone would be this
    y.sum().backward()
    assert torch.isfinite(A.grad).all()


def test_autocast_does_not_lower_the_scan_precision():
    inputs = {k: v.detach().float() for k, v in random_inputs(batch=1, length=40, num_states=1).items()}
    y, _ = selective_scan(**inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_autocast, _ = selective_scan(**inputs)
    assert y_autocast.dtype == torch.float32
    torch.testing.assert_close(y_autocast, y, rtol=0, atol=0)
