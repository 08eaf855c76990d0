"""Gated delta rule (Gated DeltaNet): chunked training, step-by-step decode, and the float64 oracle."""
from gdn.kernels.gated_delta.chunk import chunk_gated_delta_rule
from gdn.kernels.gated_delta.recurrent import recurrent_gated_delta_rule
from gdn.kernels.gated_delta.reference import recurrent_gated_delta_rule_reference
from gdn.kernels.gated_delta.torch_chunk import chunk_gated_delta_rule_torch

__all__ = ["chunk_gated_delta_rule", "recurrent_gated_delta_rule", "recurrent_gated_delta_rule_reference"]
