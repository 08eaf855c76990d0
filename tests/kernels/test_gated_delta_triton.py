"""Triton gated delta rule (chunked and recurrent) against float64 references: outputs, final states, gradients.

CPU: the Triton interpreter at small shapes against the step-by-step oracle. GPU (marked `gpu`): real shapes
against the float64 PyTorch chunked computation on the GPU (itself tested against the oracle in
test_torch_chunk.py); the measured errors are printed (run with -s to see them).
"""
import functools
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before any kernel import, as in tests/conftest.py

import pytest
import torch.nn.functional as F

from gdn.kernels import (
    chunk_gated_delta_rule,
    chunk_gated_delta_rule_torch,
    recurrent_gated_delta_rule,
    recurrent_gated_delta_rule_reference,
)
from gdn.kernels.gated_delta import _common
from tests.kernels import checks
from tests.kernels.checks import DEVICE, assert_within, outputs_and_gradients, relative_error

HALF_TOLERANCE = dict(o=5e-3, final_state=5e-3, dq=8e-3, dk=8e-3, dv=8e-3, dinitial_state=8e-3, dg=2e-2, dbeta=2e-2)
FP32_TOLERANCE = {name: 1e-5 for name in HALF_TOLERANCE}


@pytest.fixture(autouse=True)
def nan_filled_buffers(monkeypatch):
    """Every buffer the kernels allocate starts as NaN, so an element a kernel leaves unwritten fails the test."""
    monkeypatch.setattr(_common, "poison_outputs", True)


def random_inputs(B, T, H, K, V, dtype, num_states=None, l2norm=False, seed=0):
    """Inputs as a GDN layer makes them: unit-norm keys unless l2norm is asked for, decays exp(g) in (0, 1)."""
    gen = torch.Generator(DEVICE).manual_seed(seed)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, device=DEVICE)

    k = randn(B, T, H, K)
    inputs = dict(
        q=randn(B, T, H, K) * (1.0 if l2norm else K**-0.5),
        k=k if l2norm else F.normalize(k, dim=-1),
        v=randn(B, T, H, V),
        g=F.logsigmoid(randn(B, T, H) + 2.0),
        beta=torch.sigmoid(randn(B, T, H)),
    )
    inputs = {name: (x.to(dtype) if name != "g" else x) for name, x in inputs.items()}
    if num_states is not None:
        inputs["initial_state"] = randn(num_states, H, K, V)
    return inputs


def run(fn, inputs, cotangents=None, **kwargs):
    return outputs_and_gradients(fn, inputs, "o", cotangents, **kwargs)


def compare(inputs, reference, **kwargs) -> dict[str, float]:
    return checks.compare(chunk_gated_delta_rule, reference, inputs, "o", **kwargs)


CPU_CASES = [  # (T, K, V, dtype, l2norm, initial state)
    (1, 16, 16, torch.float32, False, True),
    (63, 32, 48, torch.bfloat16, True, False),
    (64, 64, 32, torch.bfloat16, False, True),
    (65, 48, 16, torch.float32, True, True),
    (130, 32, 64, torch.bfloat16, True, True),
    (130, 16, 32, torch.float32, False, False),
    (65, 16, 32, torch.float16, False, True),
]


@pytest.mark.parametrize("T,K,V,dtype,l2norm,with_state", CPU_CASES)
def test_chunk_matches_oracle(T, K, V, dtype, l2norm, with_state):
    inputs = random_inputs(2, T, 2, K, V, dtype, num_states=2 if with_state else None, l2norm=l2norm)
    errors = compare(inputs, recurrent_gated_delta_rule_reference, use_qk_l2norm=l2norm)
    assert_within(errors, FP32_TOLERANCE if dtype == torch.float32 else HALF_TOLERANCE)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunk_varlen_matches_oracle(dtype):
    cu_seqlens = torch.tensor([0, 17, 81, 160], dtype=torch.int32, device=DEVICE)  # partial, exact, 1 + partial chunks
    inputs = random_inputs(1, 160, 2, 32, 32, dtype, num_states=3, l2norm=True, seed=1)
    errors = compare(inputs, recurrent_gated_delta_rule_reference, cu_seqlens=cu_seqlens, use_qk_l2norm=True)
    assert_within(errors, FP32_TOLERANCE if dtype == torch.float32 else HALF_TOLERANCE)


def assert_recompute_changes_nothing(inputs, **kwargs):
    """recompute_states=True: bit-identical outputs and gradients in the interpreter (same kernels, same inputs)."""
    kept, cotangents = run(chunk_gated_delta_rule, inputs, **kwargs)
    rebuilt, _ = run(chunk_gated_delta_rule, inputs, cotangents, recompute_states=True, **kwargs)
    for name, value in kept.items():
        assert torch.equal(rebuilt[name], value), name


def test_recompute_states_gives_the_same_result_and_keeps_less():
    cu_seqlens = torch.tensor([0, 17, 81, 160], dtype=torch.int32, device=DEVICE)
    inputs = random_inputs(1, 160, 2, 32, 32, torch.bfloat16, num_states=3, l2norm=True, seed=2)
    assert_recompute_changes_nothing(inputs, cu_seqlens=cu_seqlens, use_qk_l2norm=True)
    dense = {name: x.detach().requires_grad_() for name, x in random_inputs(1, 256, 2, 32, 64, torch.bfloat16,
                                                                          seed=3).items()}
    kept = checks.saved_bytes(chunk_gated_delta_rule, **dense)
    rebuilt = checks.saved_bytes(chunk_gated_delta_rule, **dense, recompute_states=True)
    # 4 chunks x 2 heads of 32 x 64 bf16 states, V_new, W (bf16), T (64 fp32 per token and head) and gc are gone
    assert kept - rebuilt >= 4 * 2 * 32 * 64 * 2 + 256 * 2 * (64 + 32) * 2 + 256 * 2 * 64 * 4


def test_chunk_without_state_arguments():
    inputs = random_inputs(1, 70, 2, 16, 16, torch.float32)
    o, final = chunk_gated_delta_rule(**inputs, scale=0.3)
    expected, _ = recurrent_gated_delta_rule_reference(**{n: x.double() for n, x in inputs.items()}, scale=0.3)
    assert final is None
    assert relative_error(o, expected) < 1e-5


@pytest.mark.parametrize("cu_seqlens", [None, [0, 3, 5, 12]])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_recurrent_matches_oracle(cu_seqlens, dtype):
    B, num_states = (2, 2) if cu_seqlens is None else (1, 3)
    inputs = random_inputs(B, 12, 2, 48, 32, dtype, num_states=num_states, l2norm=True, seed=2)
    if cu_seqlens is not None:
        cu_seqlens = torch.tensor(cu_seqlens, dtype=torch.int32, device=DEVICE)
    kwargs = dict(output_final_state=True, cu_seqlens=cu_seqlens, use_qk_l2norm=True)
    o, final = recurrent_gated_delta_rule(**inputs, **kwargs)
    o_ref, final_ref = recurrent_gated_delta_rule_reference(**{n: x.double() for n, x in inputs.items()}, **kwargs)
    bound = 1e-5 if dtype == torch.float32 else 5e-3
    assert relative_error(o, o_ref) < bound and relative_error(final, final_ref) < 1e-5


def test_recurrent_decode_steps_chain_into_the_chunked_result():
    inputs = random_inputs(1, 5, 2, 16, 16, torch.float32, num_states=1, seed=3)
    o_full, final_full = chunk_gated_delta_rule(**inputs, output_final_state=True)
    state, steps = inputs.pop("initial_state"), []
    for t in range(5):
        o_t, state = recurrent_gated_delta_rule(**{n: x[:, t : t + 1] for n, x in inputs.items()},
                                                initial_state=state, output_final_state=True)
        steps.append(o_t)
    assert relative_error(torch.cat(steps, 1), o_full) < 1e-5 and relative_error(state, final_full) < 1e-5


def test_recurrent_with_gradients_goes_through_the_chunked_backward():
    inputs = random_inputs(1, 9, 2, 16, 16, torch.float32, num_states=1, seed=4)
    ours, cotangents = run(recurrent_gated_delta_rule, inputs)
    expected, _ = run(recurrent_gated_delta_rule_reference, {n: x.double() for n, x in inputs.items()}, cotangents)
    errors = {name: relative_error(ours[name], expected[name]) for name in expected}
    assert_within(errors, FP32_TOLERANCE)


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(K=257), "K = 257"),
        (dict(V=513), "V = 513"),
        (dict(dtype=torch.float64), "bf16, fp16 or fp32"),
        (dict(B=2, cu_seqlens=[0, 4, 8]), "batch size must be 1"),
        (dict(cu_seqlens=[0, 5, 4, 8]), "cu_seqlens"),
        (dict(num_states=2), "initial_state"),
    ],
)
@pytest.mark.parametrize("fn", [chunk_gated_delta_rule, recurrent_gated_delta_rule])
def test_out_of_limit_inputs_raise(fn, change, message):
    shape = dict(B=1, K=16, V=16, dtype=torch.float32, num_states=None, cu_seqlens=None) | change
    inputs = random_inputs(shape["B"], 8, 1, shape["K"], shape["V"], shape["dtype"], shape["num_states"])
    cu_seqlens = shape["cu_seqlens"]
    if cu_seqlens is not None:
        cu_seqlens = torch.tensor(cu_seqlens, dtype=torch.int32, device=DEVICE)
    with pytest.raises(ValueError, match=message):
        fn(**inputs, cu_seqlens=cu_seqlens)


GPU_CASES = {  # name: (B, T, H, K, V, cu_seqlens)
    "8x4096x16x128x128": (8, 4096, 16, 128, 128, None),
    "4x4096x6x256x512": (4, 4096, 6, 256, 512, None),
    "varlen-32K-x16x128x128": (1, 32768, 16, 128, 128, [0, 1000, 5097, 5100, 13000, 21191, 32768]),
    # small heads (the CPU-default model's 32, the tiny scale's 16): 32-wide tiles miscompiled on Hopper once
    "varlen-2x256x4x32x32": (1, 512, 4, 32, 32, [0, 100, 256, 512]),
    "2x300x4x16x16": (2, 300, 4, 16, 16, None),
    "2x300x4x64x32": (2, 300, 4, 64, 32, None),
    "2x300x4x48x80": (2, 300, 4, 48, 80, None),
}


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(GPU_CASES))
def test_gpu_chunk_matches_float64_chunked(name):
    B, T, H, K, V, cu_seqlens = GPU_CASES[name]
    num_states = B if cu_seqlens is None else len(cu_seqlens) - 1
    if cu_seqlens is not None:
        cu_seqlens = torch.tensor(cu_seqlens, dtype=torch.int32, device=DEVICE)
    inputs = random_inputs(B, T, H, K, V, torch.bfloat16, num_states=num_states, l2norm=True, seed=5)
    errors = compare(inputs, chunk_gated_delta_rule_torch, cu_seqlens=cu_seqlens, use_qk_l2norm=True)
    print(f"\n[gpu errors] {name} bf16: " + ", ".join(f"{n} {e:.2e}" for n, e in errors.items()))
    assert_within(errors, HALF_TOLERANCE)


@pytest.mark.gpu
def test_gpu_recompute_states_matches_float64_chunked():
    """recompute_states=True at the 1.3B layer's shape, against the float64 chunked reference like the cases above
    (not against the kept-states run bit for bit: two identical GPU calls already differ in the last bits)."""
    inputs = random_inputs(4, 4096, 6, 256, 512, torch.bfloat16, num_states=4, l2norm=True, seed=8)
    rebuilding = functools.partial(chunk_gated_delta_rule, recompute_states=True)
    errors = checks.compare(rebuilding, chunk_gated_delta_rule_torch, inputs, "o", use_qk_l2norm=True)
    shown = ", ".join(f"{n} {e:.2e}" for n, e in errors.items())
    print(f"\n[gpu errors] 4x4096x6x256x512 recompute_states bf16: {shown}")
    assert_within(errors, HALF_TOLERANCE)


@pytest.mark.gpu
def test_gpu_chunk_fp32_matches_float64_chunked():
    inputs = random_inputs(2, 1000, 4, 64, 96, torch.float32, num_states=2, seed=6)
    errors = compare(inputs, chunk_gated_delta_rule_torch)
    print("\n[gpu errors] 2x1000x4x64x96 fp32: " + ", ".join(f"{n} {e:.2e}" for n, e in errors.items()))
    assert_within(errors, FP32_TOLERANCE)


@pytest.mark.gpu
def test_gpu_recurrent_decode_matches_oracle():
    inputs = random_inputs(8, 3, 16, 128, 128, torch.bfloat16, num_states=8, l2norm=True, seed=7)
    kwargs = dict(output_final_state=True, use_qk_l2norm=True)
    o, final = recurrent_gated_delta_rule(**inputs, **kwargs)
    o_ref, final_ref = recurrent_gated_delta_rule_reference(**{n: x.double() for n, x in inputs.items()}, **kwargs)
    errors = dict(o=relative_error(o, o_ref), final_state=relative_error(final, final_ref))
    print("\n[gpu errors] recurrent 8x3x16x128x128 bf16: " + ", ".join(f"{n} {e:.2e}" for n, e in errors.items()))
    assert errors["o"] < 5e-3 and errors["final_state"] < 1e-5
