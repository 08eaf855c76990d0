"""A byte-level tokenizer with no dependency: token id = UTF-8 byte value, vocabulary 256.

It has the slice of the HF `tokenizers` interface that the evaluation code uses (`encode(text).ids`, `decode(ids)`),
so gdn.eval.niah runs with it where the `tokenizers` package is absent (the GPU image of benchmarks/paper_check.py).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

BYTE_VOCAB_SIZE = 256


@dataclass
class Encoding:
    ids: list[int]


class ByteTokenizer:
    vocab_size = BYTE_VOCAB_SIZE

    def encode(self, text: str, add_special_tokens: bool = False) -> Encoding:
        return Encoding(list(text.encode("utf-8")))

    def decode(self, ids: Sequence[int]) -> str:
        """Ids outside [0, 256) are an error; a cut multi-byte character decodes as U+FFFD."""
        bad = [i for i in ids if not 0 <= i < BYTE_VOCAB_SIZE]
        if bad:
            raise ValueError(f"byte tokenizer: ids {bad[:5]} are outside [0, {BYTE_VOCAB_SIZE})")
        return bytes(ids).decode("utf-8", errors="replace")
