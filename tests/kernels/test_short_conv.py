import importlib

import pytest
import torch

from gdn.kernels.short_conv import short_conv, short_conv_reference, short_conv_step
from tests.kernels.checks import DEVICE, relative_error

pytestmark = pytest.mark.usefixtures("nan_filled_buffers")  # tests/kernels/conftest.py


def make_inputs(batch, length, channels, width, num_seqs, device=DEVICE, bias=True, state=True):
    """float64 leaf tensors: x [B, T, C], weight [C, W], bias [C], initial_state [N, C, W-1]."""
    def leaf(*shape, scale=1.0):
        return (scale * torch.randn(*shape, dtype=torch.float64, device=device)).requires_grad_()

    return dict(
        x=leaf(batch, length, channels),
        weight=leaf(channels, width, scale=0.5),
        bias=leaf(channels) if bias else None,
        initial_state=leaf(num_seqs, channels, width - 1) if state else None,
    )


def check_against_reference(inputs, dtype, tolerance, cu_seqlens=None, activation="silu"):
    """Output, final state and every input gradient of short_conv (in `dtype`) vs the float64 reference."""
    leaves = {name: t for name, t in inputs.items() if t is not None}
    ours = short_conv(**{name: t.to(dtype) for name, t in leaves.items()}, activation=activation,
                      cu_seqlens=cu_seqlens, output_final_state=True)
    reference = short_conv_reference(**leaves, activation=activation, cu_seqlens=cu_seqlens,
                                     output_final_state=True)
    cotangents = [torch.randn_like(t) for t in reference]
    grads = torch.autograd.grad(sum((o * c).sum() for o, c in zip(ours, cotangents)), list(leaves.values()))
    grads_ref = torch.autograd.grad(sum((r * c).sum() for r, c in zip(reference, cotangents)), list(leaves.values()))
    assert ours[0].dtype == dtype and ours[0].shape == reference[0].shape
    assert relative_error(ours[0], reference[0]) < tolerance
    assert relative_error(ours[1], reference[1]) < tolerance
    for name, grad, grad_ref in zip(leaves, grads, grads_ref):
        assert relative_error(grad, grad_ref) < tolerance, name


@pytest.mark.parametrize("width", [2, 3, 4])
def test_fixed_length_with_state_matches_reference(width):
    torch.manual_seed(width)
    check_against_reference(make_inputs(2, 37, 136, width, num_seqs=2), torch.float32, 1e-5)


@pytest.mark.parametrize("width", [3, 4])
def test_varlen_with_state_matches_reference(width):
    torch.manual_seed(10 + width)
    cu_seqlens = torch.tensor([0, 2, 181, 301], dtype=torch.int32, device=DEVICE)  # spans several backward programs
    check_against_reference(make_inputs(1, 301, 72, width, num_seqs=3), torch.float32, 1e-5, cu_seqlens)


def test_no_bias_no_state_no_activation_matches_reference():
    torch.manual_seed(1)
    inputs = make_inputs(3, 19, 40, 4, num_seqs=3, bias=False, state=False)
    check_against_reference(inputs, torch.float32, 1e-5, activation=None)


def test_width_one_matches_reference():
    torch.manual_seed(2)
    check_against_reference(make_inputs(2, 9, 24, 1, num_seqs=2), torch.float32, 1e-5)


def test_bfloat16_within_bound():
    torch.manual_seed(3)
    cu_seqlens = torch.tensor([0, 7, 8, 45], dtype=torch.int32, device=DEVICE)
    check_against_reference(make_inputs(1, 45, 72, 4, num_seqs=3), torch.bfloat16, 1e-2, cu_seqlens)


def test_varlen_documents_do_not_leak():
    torch.manual_seed(4)
    cu_seqlens = torch.tensor([0, 5, 6, 17], dtype=torch.int32, device=DEVICE)
    x = torch.randn(1, 17, 24, device=DEVICE)
    weight = torch.randn(24, 4, device=DEVICE)
    y, _ = short_conv(x, weight, cu_seqlens=cu_seqlens)
    x_changed = x.clone()
    x_changed[:, 5] += 10.0  # the one-token middle document
    y_changed, _ = short_conv(x_changed, weight, cu_seqlens=cu_seqlens)
    assert torch.equal(y[:, :5], y_changed[:, :5]) and torch.equal(y[:, 6:], y_changed[:, 6:])
    assert not torch.equal(y[:, 5], y_changed[:, 5])


def test_chunked_prefill_then_decode_steps_match_one_pass():
    """Prefill in two chunks carrying the state, then decode token by token: same as one pass over all tokens."""
    torch.manual_seed(5)
    x = torch.randn(2, 23, 40, device=DEVICE)
    weight, bias = torch.randn(40, 4, device=DEVICE), torch.randn(40, device=DEVICE)
    y_full, state_full = short_conv(x, weight, bias, output_final_state=True)

    y_head, state = short_conv(x[:, :11], weight, bias, output_final_state=True)
    y_mid, state = short_conv(x[:, 11:18], weight, bias, initial_state=state, output_final_state=True)
    steps = []
    for t in range(18, 23):
        y_t, state = short_conv_step(x[:, t], state, weight, bias)
        steps.append(y_t)
    y_chunked = torch.cat([y_head, y_mid, torch.stack(steps, dim=1)], dim=1)
    torch.testing.assert_close(y_chunked, y_full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state, state_full, rtol=0, atol=0)


def test_decode_step_float64_matches_reference():
    torch.manual_seed(6)
    inputs = make_inputs(3, 6, 16, 3, num_seqs=3)
    x, weight, bias, state = (inputs[k].detach() for k in ("x", "weight", "bias", "initial_state"))
    y_ref, state_ref = short_conv_reference(x, weight, bias, initial_state=state, output_final_state=True)
    for t in range(x.shape[1]):
        y_t, state = short_conv_step(x[:, t], state, weight, bias)
        assert y_t.dtype == torch.float64
        torch.testing.assert_close(y_t, y_ref[:, t], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state, state_ref, rtol=0, atol=0)


def test_rejects_width_above_four():
    with pytest.raises(ValueError, match="W <= 4"):
        short_conv(torch.randn(1, 4, 8), torch.randn(8, 5))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_gpu_full_size_matches_reference(dtype, tolerance):
    """GDN's q/k/v conv at training size: 4 x 4096 tokens, 4352 channels, W = 4."""
    torch.manual_seed(7)
    check_against_reference(make_inputs(4, 4096, 4352, 4, num_seqs=4), dtype, tolerance)


@pytest.mark.gpu
def test_gpu_varlen_full_size_matches_reference():
    torch.manual_seed(8)
    cu_seqlens = torch.tensor([0, 1, 5000, 16384], dtype=torch.int32, device=DEVICE)
    check_against_reference(make_inputs(1, 16384, 4352, 4, num_seqs=3), torch.float32, 1e-5, cu_seqlens)


def test_the_row_sequence_index_is_built_once_per_cu_seqlens_tensor(monkeypatch):
    # Every convolution of a step, forward and backward, shares the batch's index; an in-place change of
    # cu_seqlens or another tensor builds it again, and each build is right for its tensor.
    conv = importlib.import_module("gdn.kernels.short_conv.triton")  # the package name is also the function's

    builds = []
    build = conv._build_sequence_index
    monkeypatch.setattr(conv, "_build_sequence_index", lambda *args: builds.append(args) or build(*args))
    monkeypatch.setattr(conv, "_row_sequences", conv.TensorMemo(size=1))
    cu_seqlens = torch.tensor([0, 5, 12, 20], dtype=torch.int32, device=DEVICE)
    for _ in range(2):
        inputs = make_inputs(1, 20, 8, 4, 3, state=False)
        y, _ = short_conv(**inputs, cu_seqlens=cu_seqlens)
        y.sum().backward()
    assert len(builds) == 1
    assert conv._sequence_index(cu_seqlens, 20).tolist() == [0] * 5 + [1] * 7 + [2] * 8
    cu_seqlens[1] = 6
    assert conv._sequence_index(cu_seqlens, 20).tolist() == [0] * 6 + [1] * 6 + [2] * 8
    assert len(builds) == 2
