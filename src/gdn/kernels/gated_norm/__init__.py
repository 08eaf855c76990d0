"""RMSNorm and the per-head gated RMSNorm (GDN's output norm times SiLU of the output gate): Triton fwd/bwd and the
oracle."""
from gdn.kernels.gated_norm.reference import gated_rms_norm_reference
from gdn.kernels.gated_norm.triton import gated_rms_norm, rms_norm

__all__ = ["gated_rms_norm", "gated_rms_norm_reference", "rms_norm"]
