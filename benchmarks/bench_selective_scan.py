"""Mamba1 selective scan speed and memory: our Triton scan vs our chunked PyTorch scan; prints a markdown table.

    PYTHONPATH=src python benchmarks/bench_selective_scan.py            # one GPU (~1-2 min, most of it compiling)
    PYTHONPATH=src python benchmarks/bench_selective_scan.py --smoke    # CPU: Triton interpreter, tiny shape

Shapes (batch x tokens x channels x d_state): 1 x 4096 x 4608 x 16 (FLA's chunk_hgrn anchor: 22.6 ms fwd+bwd,
7 GiB, in ../shared/reference/anchors-measured.md) and Samba-1.3B's mixer, 4 x 4096 tokens of d_model 2304 ->
4608 channels x 16 states. Inputs as the Mamba1 layer passes them under bf16 autocast: x, B, C and the raw dt bf16,
dt_bias fp32 with dt_softplus (the step softplus(dt + dt_bias) ~ 0.02), A = -(1..16) fp32 (S4D-real), D fp32.
fwd is the training forward (inputs require grad), fwd+bwd computes every input's gradient.
Times are medians of CUDA-event timings after warm-up; peak memory is the allocator's peak during one fwd+bwd above
what the inputs hold. "y err" is the Triton output's relative RMSE against the PyTorch path's (fp32 inside both).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

if "--smoke" in sys.argv:  # always on the CPU, through the Triton interpreter (set before the kernels are imported)
    os.environ.setdefault("TRITON_INTERPRET", "1")

from gdn.kernels.selective_scan import chunk_selective_scan, selective_scan_torch  # noqa: E402

GPU_SHAPES = [("1x4096x4608x16 (hgrn anchor)", 1, 4096, 4608, 16),
              ("4x4096x4608x16 (Samba-1.3B)", 4, 4096, 4608, 16)]
SMOKE_SHAPES = [("1x80x40x16 (smoke)", 1, 80, 40, 16)]
ANCHORS = ["FLA chunk_hgrn over flattened channels, 1x4096x4608x16: fwd+bwd 22.6 ms, 7 GiB (H100)",
           "mamba_ssm Triton SSD (Mamba2), 4x4096, 64 heads x 64, d_state 128: fwd 1.59 ms, fwd+bwd 6.04 ms (H100)"]


def make_inputs(batch, length, channels, states, device):
    gen = torch.Generator(device).manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=gen, device=device)

    inputs = dict(
        x=randn(batch, length, channels).bfloat16(),
        dt=(0.5 * randn(batch, length, channels)).bfloat16(),
        dt_bias=torch.full((channels,), -4.0, device=device),  # softplus(-4) ~ 0.02, inside Mamba's dt init range
        A=-torch.arange(1, states + 1, device=device, dtype=torch.float32).expand(channels, states).contiguous(),
        B=randn(batch, length, states).bfloat16(),
        C=randn(batch, length, states).bfloat16(),
        D=torch.ones(channels, device=device),
    )
    return {name: t.requires_grad_() for name, t in inputs.items()}


def median_ms(fn, cuda: bool, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            began = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - began))
    return statistics.median(times)


def measure(scan, inputs, cuda: bool, warmup: int, repeats: int):
    """(fwd ms, fwd+bwd ms, peak GiB above the inputs or None on the CPU, y)."""
    leaves = list(inputs.values())
    y = scan(**inputs)[0]
    grad_y = torch.randn_like(y)

    def forward():
        return scan(**inputs)[0]

    def forward_backward():
        torch.autograd.grad(scan(**inputs)[0], leaves, grad_y)

    fwd = median_ms(forward, cuda, warmup, repeats)
    fwd_bwd = median_ms(forward_backward, cuda, warmup, repeats)
    peak = None
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
        forward_backward()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - baseline) / 2**30
    return fwd, fwd_bwd, peak, y.detach()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shape on the CPU (Triton interpreter)")
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: on a CPU run with --smoke")
    cuda = not args.smoke
    device = "cuda" if cuda else "cpu"
    shapes, warmup, repeats = (GPU_SHAPES, 3, 10) if cuda else (SMOKE_SHAPES, 0, 1)
    scans = [
        ("Triton (ours)", lambda **t: chunk_selective_scan(**t, dt_softplus=True)),
        ("PyTorch chunked (ours, chunk 16)", lambda **t: selective_scan_torch(**t, chunk_size=16, dt_softplus=True)),
    ]
    where = torch.cuda.get_device_name() if cuda else "CPU (Triton interpreter: times say nothing about speed)"
    print(f"{where}, torch {torch.__version__}, bf16 x/B/C, fp32 dt/A/D\n")
    print("| shape | implementation | fwd ms | fwd+bwd ms | peak GiB (fwd+bwd) | y err vs PyTorch |")
    print("|---|---|---|---|---|---|")
    for label, batch, length, channels, states in shapes:
        inputs = make_inputs(batch, length, channels, states, device)
        results = [(name, *measure(scan, inputs, cuda, warmup, repeats)) for name, scan in scans]
        y_torch = results[1][-1].float()
        for name, fwd, fwd_bwd, peak, y in results:
            error = ((y.float() - y_torch).norm() / y_torch.norm()).item()
            memory = f"{peak:.2f}" if peak is not None else "-"
            print(f"| {label} | {name} | {fwd:.3f} | {fwd_bwd:.3f} | {memory} | {error:.1e} |", flush=True)
        speedup = results[1][2] / results[0][2]
        print(f"| {label} | fwd+bwd speed-up of Triton over PyTorch | | {speedup:.1f}x | | |", flush=True)
        del inputs, results
    print("\nAnchors (../shared/reference/anchors-measured.md):\n" + "\n".join(f"- {a}" for a in ANCHORS))


if __name__ == "__main__":
    main()
