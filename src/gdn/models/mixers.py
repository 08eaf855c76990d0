"""The sequence-mixer registry: a layer pattern such as ["gdn", "swa"] names its mixers here."""
from __future__ import annotations

from torch import nn

from gdn.models.attention import Attention, SlidingWindowAttention
from gdn.models.gated_deltanet import GatedDeltaNet
from gdn.models.mamba1 import Mamba1
from gdn.models.mamba2 import Mamba2

MIXERS: dict[str, type[nn.Module]] = {
    "gdn": GatedDeltaNet,
    "attn": Attention,
    "swa": SlidingWindowAttention,
    "mamba": Mamba1,
    "mamba2": Mamba2,
}


def build_mixer(name: str, d_model: int, **kwargs) -> nn.Module:
    """MIXERS[name](d_model, **kwargs); every mixer maps (x, cu_seqlens=None, state=None) -> (y, new_state)."""
    if name not in MIXERS:
        raise ValueError(f"unknown mixer {name!r}; choose one of {sorted(MIXERS)}")
    return MIXERS[name](d_model, **kwargs)
