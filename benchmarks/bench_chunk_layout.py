"""Host-side cost of the varlen chunk layout (gdn.kernels.gated_delta._common.chunk_layout), which the GDN and SSD
ops build in every forward and backward of every layer: wall time per call on the GPU, synchronisations included.

    python3 benchmarks/bench_chunk_layout.py                              # this tree's src/
    PYTHONPATH=.baseline/src python3 benchmarks/bench_chunk_layout.py     # an older commit's, for the same-run check
"""
import sys
import time

import torch

from gdn.kernels.gated_delta._common import chunk_layout


def packed_bounds(tokens: int, documents: int, generator: torch.Generator) -> torch.Tensor:
    """cu_seqlens of `documents` random-length documents over `tokens` tokens."""
    cuts = torch.randperm(tokens - 1, generator=generator)[: documents - 1].sort().values + 1
    return torch.cat([torch.tensor([0]), cuts, torch.tensor([tokens])]).to(torch.int32)


def main() -> None:
    device = torch.device("cuda")
    generator = torch.Generator().manual_seed(0)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, chunk_layout from {sys.modules[chunk_layout.__module__].__file__}")
    for tokens, documents in [(16 * 2048, 25), (8 * 4096, 8), (16 * 2048, 200)]:
        cu = packed_bounds(tokens, documents, generator).to(device)
        for _ in range(20):
            chunk_layout(1, tokens, cu, device)
        torch.cuda.synchronize()
        calls = 500
        started = time.perf_counter()
        for _ in range(calls):
            chunk_layout(1, tokens, cu, device)
        torch.cuda.synchronize()
        print(f"{tokens} tokens, {documents} documents: {(time.perf_counter() - started) / calls * 1e6:.1f} us per call")


if __name__ == "__main__":
    main()
