"""SwiGLU's element-wise part (SiLU(gate) * up) and its backward in Triton; the MLP around it is gdn.models.mlp."""
from gdn.kernels.swiglu.triton import swiglu_backward, swiglu_forward

__all__ = ["swiglu_backward", "swiglu_forward"]
