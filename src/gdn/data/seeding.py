"""Random number generators derived from integer keys, so any batch can be regenerated from its index alone."""
import numpy as np
import torch


def seeded_generator(*key: int) -> torch.Generator:
    """A CPU generator whose stream depends only on `key` (e.g. seed, stream, index).

    numpy's SeedSequence hashes the key, so neighbouring keys give unrelated streams.
    """
    if any(k < 0 for k in key):
        raise ValueError(f"seed keys must be non-negative integers, got {key}")
    state = np.random.SeedSequence(list(key)).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))
