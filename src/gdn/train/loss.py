"""Token-level loss and accuracy over valid positions (label != -100), and a memory-lean LM head + loss.

`chunked_linear_cross_entropy` never holds the whole [tokens, vocab] logits: it walks the tokens in chunks, and for
each chunk computes the logits, the summed cross-entropy and, when a gradient is needed, the gradients of the
chunk's hidden states and of the head weight right away (softmax - one-hot is all the backward needs), then drops
the logits. Peak extra memory is one chunk of logits instead of all of them (32K tokens x 32K vocab in fp32 = 4 GiB);
the price is holding d(hidden) and d(weight) from the forward until the backward.
"""
from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def summed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of the cross-entropy over valid tokens; the caller divides by the (global) valid-token count, so that
    micro-batches and ranks with different numbers of valid tokens weigh every token the same."""
    return F.cross_entropy(
        logits.float().flatten(0, -2), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )


def count_correct(logits: torch.Tensor, labels: torch.Tensor) -> int:
    """Number of valid positions whose arg-max prediction equals the label."""
    valid = labels != IGNORE_INDEX
    return int((logits.argmax(-1)[valid] == labels[valid]).sum())


def chunk_loss_and_grad(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunk's summed cross-entropy over valid labels and its gradient in the logits, in the logits' dtype:
    d CE / d logits = softmax - one_hot(label), zero on ignored rows. Math in fp32. Element-wise work that
    torch.compile turns into two passes over the logits (compiled_chunk_loss_and_grad), where eager PyTorch makes
    about ten."""
    dtype, logits = logits.dtype, logits.float()
    valid = labels != IGNORE_INDEX
    safe_labels = labels.masked_fill(~valid, 0)
    log_z = torch.logsumexp(logits, dim=-1)
    target = logits.gather(1, safe_labels[:, None]).squeeze(1)
    total = ((log_z - target) * valid).sum()
    probabilities = torch.exp(logits - log_z[:, None])
    is_label = torch.arange(logits.shape[1], device=logits.device)[None, :] == safe_labels[:, None]
    grad = torch.where(is_label, probabilities - 1.0, probabilities) * valid[:, None]
    return total, grad.to(dtype)


@functools.cache
def compiled_chunk_loss_and_grad() -> Callable:
    """chunk_loss_and_grad through torch.compile, made on first use (Dynamo stays unimported until then); it
    compiles for the chunks' shape, and a second shape (a shorter last chunk) once more with a symbolic number of
    tokens, which later shapes reuse."""
    return torch.compile(chunk_loss_and_grad)


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """sum_i CE(hidden_i @ weight^T, label_i) over valid i, chunk by chunk; gradients computed in the forward."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk_tokens: int,
                compiled: bool):
        needs_grad = hidden.requires_grad or weight.requires_grad
        loss_and_grad = compiled_chunk_loss_and_grad() if compiled else chunk_loss_and_grad
        total = torch.zeros((), device=hidden.device, dtype=torch.float32)
        grad_hidden = torch.empty_like(hidden) if needs_grad else None
        grad_weight = torch.zeros(weight.shape, device=weight.device, dtype=torch.float32) if needs_grad else None
        for start in range(0, hidden.shape[0], chunk_tokens):
            h, y = hidden[start : start + chunk_tokens], labels[start : start + chunk_tokens]
            chunk_total, grad_logits = loss_and_grad(h @ weight.T, y)
            total += chunk_total
            if needs_grad:
                grad_hidden[start : start + chunk_tokens] = grad_logits @ weight
                grad_weight += (grad_logits.T @ h).float()
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_total.to(grad_hidden.dtype), (grad_weight * grad_total).to(ctx.weight_dtype), \
            None, None, None


def chunked_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                                 chunk_tokens: int, compiled: bool = False) -> torch.Tensor:
    """The summed cross-entropy of logits = hidden @ weight^T over valid labels (as summed_cross_entropy of
    F.linear(hidden, weight)), computed `chunk_tokens` tokens at a time. hidden [..., D], weight [V, D],
    labels [...]. Under autocast the matmuls run in the autocast dtype, as F.linear would. compiled: each chunk's
    element-wise work through torch.compile (the trainer's choice where it compiles the blocks)."""
    device_type = hidden.device.type
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else hidden.dtype
    with torch.autocast(device_type, enabled=False):
        return _ChunkedLinearCrossEntropy.apply(hidden.flatten(0, -2).to(dtype), weight.to(dtype),
                                                labels.flatten(), chunk_tokens, compiled)


class ChunkedLossHead:
    """A `head` for LanguageModel.forward: returns the summed cross-entropy instead of the logits."""

    def __init__(self, labels: torch.Tensor, chunk_tokens: int, compiled: bool = False):
        self.labels, self.chunk_tokens, self.compiled = labels, chunk_tokens, compiled

    def __call__(self, hidden: torch.Tensor, lm_head: torch.nn.Linear) -> torch.Tensor:
        return chunked_linear_cross_entropy(hidden, lm_head.weight, self.labels, self.chunk_tokens, self.compiled)
