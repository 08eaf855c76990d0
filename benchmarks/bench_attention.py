"""Our sliding-window attention (FlexAttention with the cached block mask) and our Triton SSD on one GPU, beside the
alternatives and the figures of anchors-measured.md (H100, torch 2.11, Triton 3.6).

    python benchmarks/bench_attention.py           # SWA 4 x 4096 x 18 x 128, window 2048, SSD 4 x 4096 x 64 x 64, N 128
    python benchmarks/bench_attention.py --smoke    # CPU, toy shapes, PyTorch paths (a typo check)
    python benchmarks/bench_attention.py --ssd-breakdown   # also our SSD stage by stage, forward and backward

Needs torch, triton and this checkout only. bf16 q/k/v (SSD: bf16 x, B, C; fp32 dt, A, D). Times are medians of
triton.testing.do_bench (CUDA events) after warm-up, in ms; fwd+bwd backpropagates a random output gradient into
every input; "extra GiB" is the allocator's peak during one fwd+bwd above what the inputs hold. The first call of
each of our operators (Triton / torch.compile compilation) is timed separately.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from gdn.kernels.ssd import chunk_ssd, chunk_ssd_torch  # noqa: E402
from gdn.models.attention_masks import dense_mask, masked_flex_attention  # noqa: E402

# anchors-measured.md, H100 (fwd ms, fwd+bwd ms)
ATTENTION_ANCHORS = {"flex": (0.99, 2.92), "flash": (1.07, 4.44), "cudnn": (0.64, 2.50), "dense": (1.89, 7.39)}
SSD_ANCHOR = (1.59, 6.04)  # mamba_ssm's mamba_chunk_scan_combined (chunk 256), +0.55 GiB


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="CPU, toy shapes, the PyTorch paths")
    parser.add_argument("--ssd-breakdown", action="store_true", help="time each stage of our Triton SSD")
    return parser.parse_args(argv)


def timer(device):
    """ms per call: triton's do_bench on CUDA (median), else the median of a few wall-clock runs."""
    if device.type == "cuda":
        import triton

        return lambda fn: triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")

    def cpu_time(fn):
        fn()
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            runs.append((time.perf_counter() - start) * 1e3)
        return statistics.median(runs)

    return cpu_time


def measure(fn, inputs, device) -> dict:
    """fwd ms, fwd+bwd ms, extra peak GiB (CUDA), first-call seconds; fwd+bwd is None where the backward is not
    implemented on this device."""
    start = time.perf_counter()
    out = fn(*inputs)
    out = out[0] if isinstance(out, tuple) else out
    if device.type == "cuda":
        torch.cuda.synchronize()
    first_call = time.perf_counter() - start
    grad_out = torch.randn_like(out)
    del out  # and its autograd graph, before the memory baseline below
    bench = timer(device)
    with torch.no_grad():
        fwd = bench(lambda: fn(*inputs))

    def fwd_bwd():
        for t in inputs:
            t.grad = None
        o = fn(*inputs)
        (o[0] if isinstance(o, tuple) else o).backward(grad_out)

    try:
        both = bench(fwd_bwd)
    except NotImplementedError:
        return {"fwd": fwd, "fwd_bwd": None, "gib": None, "first_s": first_call}
    gib = None
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fwd_bwd()
        torch.cuda.synchronize()
        gib = (torch.cuda.max_memory_allocated() - base) / 2**30
    return {"fwd": fwd, "fwd_bwd": both, "gib": gib, "first_s": first_call}


def attention_rows(device, smoke):
    B, T, H, D, W = (1, 256, 2, 16, 64) if smoke else (4, 4096, 18, 128, 2048)
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(B, H, T, D, device=device, generator=gen, dtype=torch.bfloat16).requires_grad_()
               for _ in range(3))
    positions = torch.arange(T, device=device)
    window_mask = dense_mask(positions, positions, W)

    def sdpa_with(backend):
        def run(q, k, v):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return run

    if device.type == "cuda":
        ours = ("ours: SWA, FlexAttention + cached block mask", lambda q, k, v: masked_flex_attention(q, k, v, W))
        full = [("SDPA flash, full causal", sdpa_with(SDPBackend.FLASH_ATTENTION), "flash"),
                ("SDPA cuDNN, full causal", sdpa_with(SDPBackend.CUDNN_ATTENTION), "cudnn")]
    else:  # the CPU path of our layer (FlexAttention's backward is not implemented on the CPU)
        ours = ("ours (CPU path): SWA, SDPA + dense mask", lambda q, k, v: F.scaled_dot_product_attention(
            q, k, v, attn_mask=window_mask))
        full = [("SDPA math, full causal", sdpa_with(SDPBackend.MATH), "flash")]
    cases = [(*ours, "flex"), *full,
             ("SDPA, dense window mask", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=window_mask),
              "dense")]
    title = f"Attention, {B} x {T}, {H} heads x {D}, window {W}, bf16"
    return title, [(name, measure(fn, [q, k, v], device), ATTENTION_ANCHORS[anchor]) for name, fn, anchor in cases]


def ssd_rows(device, smoke):
    Bsz, T, H, P, N = (1, 128, 4, 16, 16) if smoke else (4, 4096, 64, 64, 128)
    gen = torch.Generator(device=device).manual_seed(0)

    def randn(*shape, dtype=torch.float32):
        return torch.randn(*shape, device=device, generator=gen).to(dtype)

    x = randn(Bsz, T, H, P, dtype=torch.bfloat16)
    dt = F.softplus(randn(Bsz, T, H) - 4.0)  # dt around softplus(-4): mamba_ssm's init range
    A = -torch.empty(H, device=device).uniform_(1, 16, generator=gen)
    B_, C_ = randn(Bsz, T, 1, N, dtype=torch.bfloat16), randn(Bsz, T, 1, N, dtype=torch.bfloat16)
    D = torch.ones(H, device=device)
    inputs = [t.requires_grad_() for t in (x, dt, A, B_, C_, D)]
    name, fn = ("ours: Triton chunk_ssd", chunk_ssd) if device.type == "cuda" else (
        "ours (CPU path): chunk_ssd_torch", chunk_ssd_torch)
    title = f"Mamba2 SSD, {Bsz} x {T}, {H} heads x headdim {P}, d_state {N}, 1 group"
    return title, [(name, measure(lambda *a: fn(*a), inputs, device), SSD_ANCHOR)]


def ssd_breakdown(device, shape=(4, 4096, 64, 64, 128)) -> None:
    """Median ms of each stage of chunk_ssd (the functions ChunkSSD calls, in its order) at the benchmark shape."""
    from gdn.kernels.gated_delta._common import chunk_layout
    from gdn.kernels.gated_delta._output import output_backward_dv, output_backward_qk_grouped, output_forward
    from gdn.kernels.gated_delta._state import state_backward, state_forward
    from gdn.kernels.ssd._cumsum import chunk_local_cumsum
    from gdn.kernels.ssd._elementwise import ssd_elementwise_backward, ssd_skip, ssd_values

    Bsz, T, H, P, N = shape
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(Bsz, T, H, P, device=device, generator=gen).bfloat16()
    dt = F.softplus(torch.randn(Bsz, T, H, device=device, generator=gen) - 4.0)
    A = -torch.empty(H, device=device).uniform_(1, 16, generator=gen)
    q, k = (torch.randn(Bsz * T, 1, N, device=device, generator=gen).bfloat16() for _ in range(2))  # one group
    D = torch.ones(H, device=device)
    layout = chunk_layout(Bsz, T, None, device)
    bench, stages = timer(device), {}
    g = (dt * A).reshape(Bsz * T, H)
    stages["chunk_local_cumsum (Triton)"] = bench(lambda: chunk_local_cumsum(g, layout))
    gc = chunk_local_cumsum(g, layout)
    stages["V = dt x"] = bench(lambda: ssd_values(x, dt))
    v = ssd_values(x, dt).view(Bsz * T, H, P)
    stages["state_forward"] = bench(lambda: state_forward(k, None, v, gc, None, False, layout))
    h = state_forward(k, None, v, gc, None, False, layout)[0]
    stages["output_forward"] = bench(lambda: output_forward(q, k, v, h, gc, 1.0, layout))
    o = output_forward(q, k, v, h, gc, 1.0, layout)
    stages["y = O + D x"] = bench(lambda: ssd_skip(o.view(x.shape), x, D))
    do = torch.randn_like(o)
    stages["output_backward_dv"] = bench(lambda: output_backward_dv(q, k, gc, do, 1.0, layout))
    dv_intra = output_backward_dv(q, k, gc, do, 1.0, layout)
    stages["state_backward"] = bench(lambda: state_backward(q, k, None, gc, do, dv_intra, None, 1.0, False, layout))
    dh, dv, _ = state_backward(q, k, None, gc, do, dv_intra, None, 1.0, False, layout)
    stages["output_backward_qk_grouped (dC, dB summed over heads)"] = bench(
        lambda: output_backward_qk_grouped(q, k, v, h, dh, gc, do, 1.0, layout))
    stages["dx, ddt, dD (fused)"] = bench(lambda: ssd_elementwise_backward(x, dt, D, do.view(x.shape), dv))
    stages["dg: reverse chunk-local cumsum (Triton)"] = bench(lambda: chunk_local_cumsum(gc, layout, reverse=True))
    print(f"\nSSD stage breakdown, {Bsz} x {T}, {H} heads x {P}, d_state {N}, 1 group (ms, median; the backward "
          "rebuilds V and the states too: add those forward stages once more)\n")
    print("| stage | ms |\n|---|---|")
    for name, ms in stages.items():
        print(f"| {name} | {ms:.3f} |")


def print_table(title, rows, anchor_label):
    print(f"\n{title}\n")
    print(f"| operator | fwd ms | fwd+bwd ms | extra GiB | first call s | {anchor_label} fwd / fwd+bwd ms |")
    print("|---|---|---|---|---|---|")
    for name, result, anchor in rows:
        both = "n/a" if result["fwd_bwd"] is None else f"{result['fwd_bwd']:.2f}"
        gib = "-" if result["gib"] is None else f"{result['gib']:.2f}"
        print(f"| {name} | {result['fwd']:.2f} | {both} | {gib} | {result['first_s']:.1f} | "
              f"{anchor[0]:.2f} / {anchor[1]:.2f} |")


def main(argv=None) -> None:
    args = parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device; run on a GPU, or pass --smoke for the CPU check")
    device = torch.device("cpu" if args.smoke else "cuda")
    card = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"# bench_attention on {card}, torch {torch.__version__}")
    print_table(*attention_rows(device, args.smoke), "anchor (H100)")
    print_table(*ssd_rows(device, args.smoke), "mamba_ssm anchor (H100)")
    if args.ssd_breakdown:
        ssd_breakdown(device)


if __name__ == "__main__":
    main()
