"""Sequence-mixing kernels, one folder per operator (see shared DESIGN: chunk.py, recurrent.py, reference.py)."""
from gdn.kernels.gated_delta import chunk_gated_delta_rule, recurrent_gated_delta_rule
from gdn.kernels.gated_delta import chunk_gated_delta_rule_torch, recurrent_gated_delta_rule_reference
from gdn.kernels.gate import gdn_gate
from gdn.kernels.gated_norm import gated_rms_norm, rms_norm
from gdn.kernels.short_conv import short_conv, short_conv_step
from gdn.kernels.ssd import chunk_ssd
from gdn.kernels.selective_scan import chunk_selective_scan
