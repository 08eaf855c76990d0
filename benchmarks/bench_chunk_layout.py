"""Host-side cost of the varlen chunk layout (gdn.kernels.gated_delta._common.chunk_layout), which the GDN and SSD
ops ask for in every forward and backward of every layer: wall time, synchronisations included, of
  - one build: each call with a new cu_seqlens tensor (what every call cost before the layout was kept per tensor);
  - one training step's calls: --calls-per-step calls on the same cu_seqlens (3 per GDN layer: the forward's check
    and layout, the backward's layout; default 24, GDN at scale=small), a new tensor each step.

    python3 benchmarks/bench_chunk_layout.py [--device cpu]                          # this tree's src/
    PYTHONPATH=.baseline/src python3 benchmarks/bench_chunk_layout.py [--device cpu] # an older commit's, same run
"""
import argparse
import sys
import time

import torch

from gdn.kernels.gated_delta._common import chunk_layout


def packed_bounds(tokens: int, documents: int, generator: torch.Generator) -> torch.Tensor:
    """cu_seqlens of `documents` random-length documents over `tokens` tokens."""
    cuts = torch.randperm(tokens - 1, generator=generator)[: documents - 1].sort().values + 1
    return torch.cat([torch.tensor([0]), cuts, torch.tensor([tokens])]).to(torch.int32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--calls-per-step", type=int, default=24)
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"{name}, torch {torch.__version__}, chunk_layout from {sys.modules[chunk_layout.__module__].__file__}")
    generator = torch.Generator().manual_seed(0)
    for tokens, documents in [(16 * 2048, 25), (8 * 4096, 8), (16 * 2048, 200)]:
        bounds = packed_bounds(tokens, documents, generator).to(device)
        fresh = [bounds.clone() for _ in range(520)]  # a new tensor for every call or step
        for cu in fresh[:20]:
            chunk_layout(1, tokens, cu, device)
        sync()
        started = time.perf_counter()
        for cu in fresh[20:]:
            chunk_layout(1, tokens, cu, device)
        sync()
        build_us = (time.perf_counter() - started) / 500 * 1e6
        started = time.perf_counter()
        for cu in fresh[20:120]:
            for _ in range(args.calls_per_step):
                chunk_layout(1, tokens, cu, device)
        sync()
        step_us = (time.perf_counter() - started) / 100 * 1e6
        print(f"{tokens} tokens, {documents} documents: {build_us:.1f} us per build, "
              f"{step_us:.1f} us per step of {args.calls_per_step} calls")


if __name__ == "__main__":
    main()
