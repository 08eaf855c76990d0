"""The language model: embedding, a stack of pre-norm residual blocks built from a mixer pattern, the LM head."""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from gdn.models.mixers import make_mixer
from gdn.models.mlp import SwiGLU
from gdn.models.norms import RMSNorm


class Block(nn.Module):
    """x = x + mixer(norm(x)); x = x + mlp(norm(x)) (the MLP is optional)."""

    def __init__(self, d_model: int, mixer: nn.Module, mlp: SwiGLU | None, norm_eps: float = 1e-5):
        super().__init__()
        self.mixer_norm = RMSNorm(d_model, norm_eps)
        self.mixer = mixer
        self.mlp_norm = RMSNorm(d_model, norm_eps) if mlp is not None else None
        self.mlp = mlp

    def forward(self, x: torch.Tensor, cu_seqlens: torch.Tensor | None = None, **mixer_inputs: Any) -> torch.Tensor:
        """mixer_inputs: host_inputs(...) for this call."""
        x = x + self.mixer(self.mixer_norm(x), cu_seqlens=cu_seqlens, **mixer_inputs)[0]
        if self.mlp is not None:
            x = x + self.mlp(self.mlp_norm(x))
        return x

    def host_inputs(self, length: int, device: torch.device, cu_seqlens: torch.Tensor | None = None) -> dict:
        """Keyword arguments of the mixer's forward that host-side Python builds (the attention mixers' cached block
        masks): the model looks them up before calling the block, outside its torch.compile'd region."""
        host_inputs = getattr(self.mixer, "host_inputs", None)
        return host_inputs(length, device, cu_seqlens) if host_inputs is not None else {}

    def decode(self, x: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """forward continuing from the mixer's decode state: (x, the mixer's new state)."""
        y, state = self.mixer(self.mixer_norm(x), state=state)
        x = x + y
        if self.mlp is not None:
            x = x + self.mlp(self.mlp_norm(x))
        return x, state


class LanguageModel(nn.Module):
    """A hybrid is a config: `layers` (e.g. ["gdn", "swa"]) repeats to n_layers blocks; `mixers` holds each
    mixer's keyword arguments by name, or a factory of one's own (gdn.models.mixers.make_mixer). See
    docs/CONTRACTS.md."""

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        n_layers: int,
        layers: Sequence[str],
        mixers: Mapping[str, Mapping],
        mlp: bool = True,
        mlp_hidden: int | None = None,
        tie_embeddings: bool = False,
        norm_eps: float = 1e-5,
        init_std: float = 0.02,
    ):
        super().__init__()
        if not layers or n_layers % len(layers):
            raise ValueError(f"n_layers={n_layers} must be a multiple of the pattern length {len(layers)}")
        self.init_std = init_std
        self.embed = nn.Embedding(vocab_size, d_model)
        pattern = list(layers) * (n_layers // len(layers))
        self.blocks = nn.ModuleList(
            Block(
                d_model,
                make_mixer(name, d_model, mixers.get(name, {})),
                SwiGLU(d_model, mlp_hidden) if mlp else None,
                norm_eps,
            )
            for name in pattern
        )
        self.norm = RMSNorm(d_model, norm_eps)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        if tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.init_weights()

    def init_weights(self) -> None:
        """FLA-style init: Linear/Embedding ~ N(0, init_std), biases 0, norms 1, each module's own special
        parameters (GDN gate, short conv) by its reset_parameters; the residual output projections (mixer o_proj,
        MLP down_proj) scaled by 1/sqrt(2 n_layers). Safe to call again after materialising a meta-device model."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=self.init_std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        residual_scale = 1 / math.sqrt(2 * len(self.blocks))
        with torch.no_grad():
            for block in self.blocks:
                block.mixer.o_proj.weight.mul_(residual_scale)
                if block.mlp is not None:
                    block.mlp.down_proj.weight.mul_(residual_scale)

    def forward(self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor | None = None,
                head: Callable[[torch.Tensor, nn.Linear], Any] | None = None) -> Any:
        """input_ids [B, T] -> logits [B, T, vocab]; cu_seqlens indexes the flattened B*T tokens.
        `head(hidden [B, T, d_model], lm_head)` replaces the logits computation (the trainer's chunked loss calls
        the head inside forward, so FSDP has the head's weights gathered) and its result is returned."""
        B, T = input_ids.shape
        if cu_seqlens is not None:
            input_ids = input_ids.reshape(1, B * T)  # mixers take packed documents as one row
        x = self.embed(input_ids)
        for block in self.blocks:
            x = block(x, cu_seqlens, **block.host_inputs(x.shape[1], x.device, cu_seqlens))
        hidden = self.norm(x).view(B, T, -1)
        return self.lm_head(hidden) if head is None else head(hidden, self.lm_head)

    def init_states(self) -> list[Any]:
        """Empty decode states, one per block, for a fresh sequence (see decode)."""
        return [block.mixer.init_state() for block in self.blocks]

    def decode(self, input_ids: torch.Tensor, states: list[Any]) -> tuple[torch.Tensor, list[Any]]:
        """input_ids [B, T] continuing the sequences that `states` (init_states() at the start) summarise ->
        (logits [B, T, vocab], the new states). A prompt, then one token at a time, gives the logits of forward
        over the whole sequence. Recurrent mixers keep a fixed-size state; attention keeps its KV cache."""
        x = self.embed(input_ids)
        new_states = []
        for block, state in zip(self.blocks, states, strict=True):
            x, state = block.decode(x, state)
            new_states.append(state)
        return self.lm_head(self.norm(x)), new_states

    def num_parameters(self) -> int:
        """Distinct parameters (a tied embedding counts once)."""
        return sum(p.numel() for p in self.parameters())
