"""Time the GDN layer's small Triton kernels against the PyTorch they replace, on one GPU; prints a markdown table.

    PYTHONPATH=src python benchmarks/bench_layer_kernels.py [--no-compile]

Shapes are GDN-1.3B training shapes in bf16: the q/k/v conv over 4 x 4096 tokens x 4352 channels (W = 4), the
output norm over 8 x 4096 tokens x 16 heads x 128, the decay gate over 8 x 4096 tokens x 16 heads.
Each time is the median of 25 CUDA-event timings after 20 warm-up calls (a freshly started GPU needs them to
reach its clocks); fwd+bwd computes every input gradient.
"""
from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from gdn.kernels.gate import gdn_gate, gdn_gate_reference
from gdn.kernels.gated_norm import gated_rms_norm, gated_rms_norm_reference
from gdn.kernels.short_conv import short_conv


def median_ms(fn, warmup: int = 20, repeats: int = 25) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def fwd_and_fwd_bwd_ms(op, inputs: list[torch.Tensor]) -> tuple[float, float]:
    grad_out = torch.randn_like(op(*inputs))

    def fwd_bwd():
        torch.autograd.grad(op(*inputs), inputs, grad_out)

    return median_ms(lambda: op(*inputs)), median_ms(fwd_bwd)


def conv1d_silu(x, weight, bias):
    """The eager baseline: F.conv1d over [B, C, T] with left padding, trimmed to causal, then SiLU."""
    width, length = weight.shape[1], x.shape[1]
    y = F.conv1d(x.transpose(1, 2), weight[:, None, :], bias, padding=width - 1, groups=x.shape[2])
    return F.silu(y[..., :length]).transpose(1, 2)


def shift_and_add_silu(x, weight, bias):
    """The same conv as W shifted multiply-adds over [B, T, C]: what torch.compile fuses well."""
    width, length = weight.shape[1], x.shape[1]
    padded = F.pad(x, (0, 0, width - 1, 0))
    return F.silu(bias + sum(padded[:, k : k + length] * weight[:, k] for k in range(width)))


def leaves(*tensors):
    return [t.requires_grad_() for t in tensors]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile'd conv baseline")
    args = parser.parse_args()
    torch.manual_seed(0)
    bf16 = dict(device="cuda", dtype=torch.bfloat16)

    conv_inputs = leaves(torch.randn(4, 4096, 4352, **bf16), 0.5 * torch.randn(4352, 4, **bf16),
                         torch.randn(4352, **bf16))
    norm_inputs = leaves(torch.randn(8, 4096, 16, 128, **bf16), torch.randn(8, 4096, 16, 128, **bf16),
                         torch.ones(128, **bf16))
    gate_inputs = leaves(torch.randn(8, 4096, 16, **bf16), torch.randn(16, device="cuda"),
                         torch.randn(16, device="cuda"))
    conv_shape = "4x4096x4352, W=4"
    cases = [
        ("short conv + SiLU", conv_shape, "Triton (ours)", lambda *t: short_conv(*t)[0], conv_inputs),
        ("short conv + SiLU", conv_shape, "F.conv1d eager", conv1d_silu, conv_inputs),
        ("gated RMSNorm", "8x4096x16x128", "Triton (ours)", gated_rms_norm, norm_inputs),
        ("gated RMSNorm", "8x4096x16x128", "eager PyTorch", gated_rms_norm_reference, norm_inputs),
        ("GDN gate", "8x4096x16", "Triton (ours)", gdn_gate, gate_inputs),
        ("GDN gate", "8x4096x16", "eager PyTorch", gdn_gate_reference, gate_inputs),
    ]
    if not args.no_compile:  # last: compiling takes a while
        cases.append(("short conv + SiLU", conv_shape, "shift-and-add, torch.compile",
                      torch.compile(shift_and_add_silu), conv_inputs))
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, bf16 inputs, median of 25\n")
    print("| kernel | shape | implementation | fwd ms | fwd+bwd ms |")
    print("|---|---|---|---|---|")
    for kernel, shape, name, op, inputs in cases:
        fwd, fwd_bwd = fwd_and_fwd_bwd_ms(op, inputs)
        print(f"| {kernel} | {shape} | {name} | {fwd:.3f} | {fwd_bwd:.3f} |", flush=True)


if __name__ == "__main__":
    main()
