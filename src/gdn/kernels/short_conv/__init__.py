"""Short causal depthwise conv + SiLU (the q/k/v conv of GDN): Triton training path, decode step, float64 oracle."""
from gdn.kernels.short_conv.recurrent import short_conv_step
from gdn.kernels.short_conv.reference import short_conv_reference
from gdn.kernels.short_conv.triton import short_conv

__all__ = ["short_conv", "short_conv_step", "short_conv_reference"]
