"""MQAR recall accuracy over a grid of key-value pairs x sequence lengths (Zoology's difficulty axes), on eval
sets generated from the run's seed and vocabulary (gdn.data.mqar)."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from gdn.data.mqar import MQARData, query_accuracy


def mqar_cell_is_valid(vocab_size: int, seq_len: int, num_kv_pairs: int) -> bool:
    """MQAR needs 4 tokens per pair (context pair + query slot) and distinct keys and values in the vocabulary."""
    return seq_len >= 4 * num_kv_pairs and vocab_size >= 2 * num_kv_pairs + 1


@torch.no_grad()
def mqar_accuracy(model: torch.nn.Module, data: MQARData, device: torch.device) -> float:
    correct, total = 0, 0
    for batch in data.eval_batches():
        logits = model(batch.input_ids.to(device))
        hits, queries = query_accuracy(logits, batch.labels.to(device))
        correct, total = correct + hits, total + queries
    return correct / total


def mqar_grid(model: torch.nn.Module, *, vocab_size: int, kv_pairs: Sequence[int], seq_lens: Sequence[int],
              num_examples: int, batch_size: int, seed: int, device: torch.device) -> dict[str, float]:
    """{"mqar/acc_kv{n}_len{T}": accuracy} for every valid (n, T); cells MQAR cannot fill are left out."""
    metrics = {}
    for seq_len in seq_lens:
        for n in kv_pairs:
            if not mqar_cell_is_valid(vocab_size, seq_len, n):
                continue
            data = MQARData(vocab_size=vocab_size, seq_len=seq_len, num_kv_pairs=n, batch_size=batch_size,
                            seed=seed, num_eval_examples=num_examples)
            metrics[f"mqar/acc_kv{n}_len{seq_len}"] = mqar_accuracy(model, data, device)
    return metrics
