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


def make_mixer(name: str, d_model: int, spec) -> nn.Module:
    """The mixer of `mixers[name]` in a model config: keyword arguments of a registered mixer, or a mixer of one's
    own, `{_target_: my_package.MyMixer, _partial_: true, ...}`, which Hydra instantiates to a partial that takes
    d_model (the same call contract; an `o_proj` output projection, and init_state() for decoding)."""
    return spec(d_model) if callable(spec) else build_mixer(name, d_model, **spec)


def build_mixer(name: str, d_model: int, **kwargs) -> nn.Module:
    """MIXERS[name](d_model, **kwargs); every mixer maps (x, cu_seqlens=None, state=None) -> (y, new_state)."""
    if name not in MIXERS:
        raise ValueError(f"unknown mixer {name!r}; choose one of {sorted(MIXERS)}")
    return MIXERS[name](d_model, **kwargs)
