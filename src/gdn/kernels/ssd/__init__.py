"""Mamba2 SSD (state space duality): the chunked Triton operator, its PyTorch twin (the CPU path) and the
float64 step-by-step oracle."""
from gdn.kernels.ssd.chunk import chunk_ssd
from gdn.kernels.ssd.reference import recurrent_ssd_reference
from gdn.kernels.ssd.torch_chunk import chunk_ssd_torch

__all__ = ["chunk_ssd", "chunk_ssd_torch", "recurrent_ssd_reference"]
