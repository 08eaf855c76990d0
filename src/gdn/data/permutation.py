"""A seeded pseudo-random permutation of range(n) evaluated index by index, in O(1) memory whatever n.

A 4-round Feistel network over the smallest even number of bits that holds n, with cycle walking: values that
land outside [0, n) are permuted again until they fall inside, which keeps the map a bijection of range(n).
"""
import numpy as np

_ROUNDS = 4
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def permute(indices: np.ndarray, n: int, *key: int) -> np.ndarray:
    """Images of `indices` (each in [0, n)) under the permutation of range(n) chosen by `key` (e.g. seed, epoch)."""
    half = max(1, (max(n - 1, 1).bit_length() + 1) // 2)
    mask = np.uint64((1 << half) - 1)
    round_keys = np.random.SeedSequence(list(key)).generate_state(_ROUNDS, dtype=np.uint64)
    x = np.asarray(indices, dtype=np.uint64).copy()
    outside = np.ones(len(x), dtype=bool)
    while outside.any():
        x[outside] = _feistel(x[outside], half, mask, round_keys)
        outside = x >= n
    return x.astype(np.int64)


def _feistel(x: np.ndarray, half: int, mask: np.uint64, round_keys: np.ndarray) -> np.ndarray:
    left, right = x >> np.uint64(half), x & mask
    for k in round_keys:
        left, right = right, left ^ (_mix(right ^ k) & mask)
    return (left << np.uint64(half)) | right


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit flips about half the output bits."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))
