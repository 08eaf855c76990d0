"""Triton selective scan (chunked and recurrent) against float64 references: outputs, final states, every gradient.

CPU: the Triton interpreter at small shapes against the step-by-step oracle. GPU (marked `gpu`): real shapes
against the float64 chunked PyTorch scan on the GPU (itself tested against the oracle in test_selective_scan.py);
the measured errors are printed (run with -s to see them).
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel import, as in tests/conftest.py

import pytest
import torch.nn.functional as F

from gdn.kernels.gated_delta import _common
from tests.kernels import checks
from tests.kernels.checks import DEVICE, assert_within, outputs_and_gradients, relative_error
from gdn.kernels.selective_scan._common import TILE
from gdn.kernels.selective_scan import (
    chunk_selective_scan,
    recurrent_selective_scan,
    selective_scan_reference,
    selective_scan_torch,
)

HALF_TOLERANCE = dict(y=5e-3, final_state=5e-3, dx=8e-3, dinitial_state=8e-3,
                      ddt=2e-2, dA=2e-2, dB=2e-2, dC=2e-2, dD=2e-2, ddt_bias=2e-2)
FP32_TOLERANCE = {name: 1e-5 for name in HALF_TOLERANCE}


@pytest.fixture(autouse=True)
def nan_filled_buffers(monkeypatch):
    """Every buffer the kernels allocate starts as NaN, so an element a kernel leaves unwritten fails the test."""
    monkeypatch.setattr(_common, "poison_outputs", True)


def random_inputs(B, T, channels, states, dtype, num_states=None, skip=True, raw_dt=False, seed=0):
    """Inputs as the Mamba1 layer makes them: dt = softplus(.) > 0 in fp32, A < 0 in fp32 (S4D-real-like range),
    x, B, C in the activation dtype, D in fp32. raw_dt: dt before its bias and softplus (any sign) and dt_bias,
    for the fused step size (call with dt_softplus=True)."""
    gen = torch.Generator(DEVICE).manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, device=DEVICE)

    inputs = dict(
        x=randn(B, T, channels).to(dtype),
        dt=F.softplus(randn(B, T, channels) - 2.0),
        A=-(torch.rand(channels, states, generator=gen, device=DEVICE) * 8 + 0.5),
        B=randn(B, T, states).to(dtype),
        C=randn(B, T, states).to(dtype),
    )
    if raw_dt:
        inputs["dt"] = randn(B, T, channels).to(dtype)
        inputs["dt_bias"] = randn(channels) - 2.0
    if skip:
        inputs["D"] = randn(channels)
    if num_states is not None:
        inputs["initial_state"] = randn(num_states, channels, states)
    return inputs


def run(fn, inputs, cotangents=None, **kwargs):
    return outputs_and_gradients(fn, inputs, "y", cotangents, **kwargs)


def compare(inputs, reference, **kwargs) -> dict[str, float]:
    return checks.compare(chunk_selective_scan, reference, inputs, "y", **kwargs)


CPU_CASES = [  # (B, T, channels, d_state, dtype, initial state); 16 channels per program at d_state 16
    (2, 1, 20, 16, torch.float32, True),
    (1, 17, 12, 16, torch.bfloat16, False),
    (1, 64, 36, 16, torch.float32, False),
    (2, 65, 20, 16, torch.bfloat16, True),
    (1, 130, 20, 16, torch.float32, True),
    (1, 130, 40, 5, torch.bfloat16, True),  # d_state not a power of two (32 channels per program)
]


@pytest.mark.parametrize("B,T,channels,states,dtype,with_state", CPU_CASES)
def test_chunk_matches_oracle(B, T, channels, states, dtype, with_state):
    inputs = random_inputs(B, T, channels, states, dtype, num_states=B if with_state else None)
    errors = compare(inputs, selective_scan_reference)
    assert_within(errors, FP32_TOLERANCE if dtype == torch.float32 else HALF_TOLERANCE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunk_varlen_three_uneven_sequences(dtype):
    cu_seqlens = torch.tensor([0, 7, 72, 97], dtype=torch.int32, device=DEVICE)  # partial, 4 + partial, 1 + partial
    inputs = random_inputs(1, 97, 20, 16, dtype, num_states=3, seed=1)
    errors = compare(inputs, selective_scan_reference, cu_seqlens=cu_seqlens)
    assert_within(errors, FP32_TOLERANCE if dtype == torch.float32 else HALF_TOLERANCE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunk_with_dt_bias_and_softplus_inside(dtype):
    """The step size softplus(dt + dt_bias) computed in the kernels; gradients reach the raw dt and the bias."""
    cu_seqlens = torch.tensor([0, 7, 50], dtype=torch.int32, device=DEVICE)
    inputs = random_inputs(1, 50, 20, 16, dtype, num_states=2, raw_dt=True, seed=10)
    errors = compare(inputs, selective_scan_reference, cu_seqlens=cu_seqlens, dt_softplus=True)
    assert_within(errors, FP32_TOLERANCE if dtype == torch.float32 else HALF_TOLERANCE)


def test_recurrent_with_dt_bias_and_softplus_inside():
    inputs = random_inputs(2, 6, 20, 16, torch.float32, num_states=2, raw_dt=True, seed=11)
    kwargs = dict(output_final_state=True, dt_softplus=True)
    y, final = recurrent_selective_scan(**inputs, **kwargs)
    y_ref, final_ref = selective_scan_reference(**{n: x.double() for n, x in inputs.items()}, **kwargs)
    assert relative_error(y, y_ref) < 1e-5 and relative_error(final, final_ref) < 1e-5


def test_chunk_varlen_with_an_empty_sequence():
    """A zero-length sequence passes its initial state through, and the gradient of its final state back."""
    cu_seqlens = torch.tensor([0, 20, 20, 33], dtype=torch.int32, device=DEVICE)
    inputs = random_inputs(1, 33, 20, 16, torch.float32, num_states=3, seed=9)
    assert_within(compare(inputs, selective_scan_reference, cu_seqlens=cu_seqlens), FP32_TOLERANCE)


def test_chunk_without_skip_state_or_gradients():
    inputs = random_inputs(1, 40, 20, 16, torch.float32, skip=False)
    y, final = chunk_selective_scan(**inputs)
    expected, _ = selective_scan_reference(**{name: x.double() for name, x in inputs.items()})
    assert final is None and relative_error(y, expected) < 1e-5


def test_strong_decay_stays_finite():
    """dt |A| of hundreds per token: decays underflow to 0 and nothing overflows (no division by a decay)."""
    inputs = random_inputs(1, 40, 20, 16, torch.float32, num_states=1, seed=2)
    inputs["dt"] = torch.full_like(inputs["dt"], 30.0)
    ours, cotangents = run(chunk_selective_scan, inputs)
    expected, _ = run(selective_scan_reference, {name: x.double() for name, x in inputs.items()}, cotangents)
    assert all(torch.isfinite(value).all() for value in ours.values())
    assert relative_error(ours["y"], expected["y"]) < 1e-5 and relative_error(ours["dx"], expected["dx"]) < 1e-5


def test_backward_keeps_one_state_per_tile_not_every_state():
    """Autograd saves the inputs and one [Dch, N] state per TILE tokens, far less than the T Dch N of every h_t."""
    saved = []
    inputs = {name: x.requires_grad_() for name, x in random_inputs(1, 128, 20, 16, torch.float32).items()}
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        y, _ = chunk_selective_scan(**inputs)
    per_token_inputs = 128 * (2 * 20 + 2 * 16)
    assert sum(saved) <= per_token_inputs + 20 * 16 + 20 + (128 // TILE) * 20 * 16  # + A, D, the checkpoints
    y.sum().backward()
    assert torch.isfinite(inputs["A"].grad).all()


@pytest.mark.parametrize("cu_seqlens", [None, [0, 3, 5, 12]])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_recurrent_matches_oracle(cu_seqlens, dtype):
    B, num_states = (2, 2) if cu_seqlens is None else (1, 3)
    inputs = random_inputs(B, 12, 20, 16, dtype, num_states=num_states, seed=3)
    if cu_seqlens is not None:
        cu_seqlens = torch.tensor(cu_seqlens, dtype=torch.int32, device=DEVICE)
    kwargs = dict(output_final_state=True, cu_seqlens=cu_seqlens)
    y, final = recurrent_selective_scan(**inputs, **kwargs)
    y_ref, final_ref = selective_scan_reference(**{n: x.double() for n, x in inputs.items()}, **kwargs)
    bound = 1e-5 if dtype == torch.float32 else 5e-3
    assert relative_error(y, y_ref) < bound and relative_error(final, final_ref) < 1e-5


def test_recurrent_decode_steps_chain_into_the_chunked_result():
    inputs = random_inputs(2, 5, 20, 16, torch.float32, num_states=2, seed=4)
    y_full, final_full = chunk_selective_scan(**inputs, output_final_state=True)
    state, steps = inputs.pop("initial_state"), []
    per_token = {"x", "dt", "B", "C"}
    for t in range(5):
        step = {n: (x[:, t : t + 1] if n in per_token else x) for n, x in inputs.items()}
        y_t, state = recurrent_selective_scan(**step, initial_state=state, output_final_state=True)
        steps.append(y_t)
    assert relative_error(torch.cat(steps, 1), y_full) < 1e-6 and relative_error(state, final_full) < 1e-6


def test_recurrent_with_gradients_goes_through_the_chunked_backward():
    inputs = random_inputs(1, 9, 20, 16, torch.float32, num_states=1, seed=5)
    ours, cotangents = run(recurrent_selective_scan, inputs)
    expected, _ = run(selective_scan_reference, {n: x.double() for n, x in inputs.items()}, cotangents)
    assert_within({name: relative_error(ours[name], expected[name]) for name in expected}, FP32_TOLERANCE)


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(states=65), "d_state N = 65"),
        (dict(dtype=torch.float64), "bf16, fp16 or fp32"),
        (dict(B=2, cu_seqlens=[0, 4, 8]), "batch size must be 1"),
        (dict(num_states=2), "initial_state"),
        (dict(A_channels=7), "A must be"),
    ],
)
@pytest.mark.parametrize("fn", [chunk_selective_scan, recurrent_selective_scan])
def test_out_of_limit_inputs_raise(fn, change, message):
    shape = dict(B=1, states=16, dtype=torch.float32, num_states=None, cu_seqlens=None, A_channels=None) | change
    inputs = random_inputs(shape["B"], 8, 20, shape["states"], shape["dtype"], shape["num_states"])
    if shape["A_channels"] is not None:
        inputs["A"] = inputs["A"][: shape["A_channels"]]
    cu_seqlens = shape["cu_seqlens"]
    if cu_seqlens is not None:
        cu_seqlens = torch.tensor(cu_seqlens, dtype=torch.int32, device=DEVICE)
    with pytest.raises(ValueError, match=message):
        fn(**inputs, cu_seqlens=cu_seqlens)


GPU_CASES = {  # name: (B, T, channels, cu_seqlens, raw dt with dt_bias and the softplus inside the scan)
    "2x4096x4096x16": (2, 4096, 4096, None, False),
    "varlen-16K-x4096x16-softplus-inside": (1, 16384, 4096, [0, 1000, 5097, 5100, 9000, 13191, 16384], True),
}


def float64_chunked(**inputs):
    return selective_scan_torch(**inputs, chunk_size=16)


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(GPU_CASES))
def test_gpu_chunk_matches_float64_chunked(name):
    B, T, channels, cu_seqlens, raw_dt = GPU_CASES[name]
    num_states = B if cu_seqlens is None else len(cu_seqlens) - 1
    if cu_seqlens is not None:
        cu_seqlens = torch.tensor(cu_seqlens, dtype=torch.int32, device=DEVICE)
    inputs = random_inputs(B, T, channels, 16, torch.bfloat16, num_states=num_states, raw_dt=raw_dt, seed=6)
    errors = compare(inputs, float64_chunked, cu_seqlens=cu_seqlens, dt_softplus=raw_dt)
    print(f"\n[gpu errors] {name} bf16: " + ", ".join(f"{n} {e:.2e}" for n, e in errors.items()))
    assert_within(errors, HALF_TOLERANCE)


@pytest.mark.gpu
def test_gpu_chunk_fp32_matches_float64_chunked():
    inputs = random_inputs(2, 1000, 520, 16, torch.float32, num_states=2, seed=7)
    errors = compare(inputs, float64_chunked)
    print("\n[gpu errors] 2x1000x520x16 fp32: " + ", ".join(f"{n} {e:.2e}" for n, e in errors.items()))
    assert_within(errors, FP32_TOLERANCE)


@pytest.mark.gpu
def test_gpu_recurrent_decode_matches_oracle():
    inputs = random_inputs(8, 3, 4096, 16, torch.bfloat16, num_states=8, seed=8)
    y, final = recurrent_selective_scan(**inputs, output_final_state=True)
    y_ref, final_ref = selective_scan_reference(**{n: x.double() for n, x in inputs.items()}, output_final_state=True)
    errors = dict(y=relative_error(y, y_ref), final_state=relative_error(final, final_ref))
    print("\n[gpu errors] recurrent 8x3x4096x16 bf16: " + ", ".join(f"{n} {e:.2e}" for n, e in errors.items()))
    assert errors["y"] < 5e-3 and errors["final_state"] < 1e-5
