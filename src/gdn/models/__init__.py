"""Layers (mixers, MLP, norms), the block stack built from a layer pattern, and the LM head."""
from gdn.models.mixers import MIXERS, build_mixer
from gdn.models.model import LanguageModel

__all__ = ["MIXERS", "LanguageModel", "build_mixer"]
