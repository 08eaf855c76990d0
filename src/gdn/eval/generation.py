"""Autoregressive generation on the recurrent decode path (LanguageModel.decode), for every architecture.

The prompt is read in one decode call (the chunked kernels with a state), then each new token costs one
decode step: constant time per token for GDN, Mamba and Mamba2, a growing (SWA: bounded) KV cache for attention.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch


@dataclass
class SamplingSettings:
    """temperature 0 is greedy (arg-max); otherwise softmax(logits / temperature), restricted to the top_k most
    likely tokens when top_k is set."""

    max_new_tokens: int = 32
    temperature: float = 0.0
    top_k: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or null, got {self.top_k}")


def next_token(logits: torch.Tensor, settings: SamplingSettings, generator: torch.Generator | None) -> torch.Tensor:
    """logits [B, vocab] -> token ids [B]."""
    if settings.temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / settings.temperature
    if settings.top_k is not None and settings.top_k < logits.shape[-1]:
        kth_largest = logits.topk(settings.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(logits.device)


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    prompt_ids: Sequence[int] | torch.Tensor,
    settings: SamplingSettings,
    generator: torch.Generator | None = None,
    stop: Callable[[list[int]], bool] | None = None,
) -> list[int]:
    """The new token ids continuing one prompt (not the prompt itself). Stops after max_new_tokens, or as soon
    as `stop(new_ids)` is true (e.g. an end-of-document token or a stop string was produced)."""
    device = next(model.parameters()).device
    prompt = torch.as_tensor(prompt_ids, dtype=torch.long, device=device).reshape(1, -1)
    if prompt.shape[1] == 0:
        raise ValueError("the prompt is empty: give at least one token (e.g. the end-of-document token)")
    new_ids: list[int] = []
    if settings.max_new_tokens == 0:
        return new_ids
    logits, states = model.decode(prompt, model.init_states())
    while True:
        token = next_token(logits[:, -1], settings, generator)
        new_ids.append(int(token))
        if len(new_ids) >= settings.max_new_tokens or (stop is not None and stop(new_ids)):
            return new_ids
        logits, states = model.decode(token.view(1, 1), states)
