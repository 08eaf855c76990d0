"""Validation loss and perplexity at multiples of the training length (length extrapolation, as the paper's code
logs at 1x and 2x). Text runs cut the same held-out tokens into longer rows; MQAR regenerates its eval set at the
longer length with the run's number of key-value pairs."""
from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Sequence

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from gdn.data.batch import Batch
from gdn.train.loss import summed_cross_entropy


@torch.no_grad()
def mean_token_loss(model: torch.nn.Module, batches: Iterable[Batch], device: torch.device) -> tuple[float, int]:
    """(mean cross-entropy over every valid label, number of valid labels)."""
    loss_sum, valid = 0.0, 0
    for batch in batches:
        batch = batch.to(device)
        logits = model(batch.input_ids, cu_seqlens=batch.cu_seqlens)
        loss_sum += summed_cross_entropy(logits, batch.labels).item()
        valid += batch.num_valid_tokens
    if valid == 0:
        raise ValueError("the held-out set has no valid labels: raise data.eval_sequences")
    return loss_sum / valid, valid


def heldout_batches(data_config: DictConfig, data, seq_len: int) -> list[Batch]:
    """The run's held-out batches at `seq_len` tokens per row."""
    if "seq_len" in inspect.signature(data.eval_batches).parameters:  # text: the same held-out tokens, rows of seq_len
        return data.eval_batches(seq_len=seq_len)
    return instantiate(data_config, seq_len=seq_len, _convert_="all").eval_batches()


def length_extrapolation(model: torch.nn.Module, data_config: DictConfig, data, factors: Sequence[float],
                         device: torch.device) -> dict[str, float]:
    """{"val/loss_1x": ..., "val/ppl_1x": ..., "val/tokens_1x": ..., ...}; perplexity = exp(mean loss)."""
    metrics: dict[str, float] = {}
    for factor in factors:
        seq_len = round(factor * data_config.seq_len)
        loss, tokens = mean_token_loss(model, heldout_batches(data_config, data, seq_len), device)
        tag = f"{factor:g}x"
        metrics |= {f"val/loss_{tag}": loss, f"val/ppl_{tag}": math.exp(loss), f"val/tokens_{tag}": tokens}
    return metrics
