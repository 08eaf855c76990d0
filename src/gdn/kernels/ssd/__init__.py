"""Mamba2 SSD (state space duality): the chunked PyTorch path and the float64 step-by-step oracle."""
from gdn.kernels.ssd.reference import recurrent_ssd_reference
from gdn.kernels.ssd.torch_chunk import chunk_ssd_torch

__all__ = ["chunk_ssd_torch", "recurrent_ssd_reference"]
