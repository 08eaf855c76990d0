"""The GDN decay gate g = -exp(A_log) * softplus(a + dt_bias): Triton fwd/bwd and the float64 oracle."""
from gdn.kernels.gate.reference import gdn_gate_reference
from gdn.kernels.gate.triton import gdn_gate

__all__ = ["gdn_gate", "gdn_gate_reference"]
