"""Tokenising processes of gdn-prepare-data: each holds one tokenizer and turns chunks of documents into tokens.

Kept apart from gdn.data.prepare so that a worker imports only numpy and tokenizers (no torch, no datasets).
"""
from __future__ import annotations

import itertools

import numpy as np
from tokenizers import Tokenizer

from gdn.data.shards import DTYPES
from gdn.data.tokenizer import END_OF_DOCUMENT

_TOKENIZER: Tokenizer | None = None


def init_worker(tokenizer_json: str) -> None:
    global _TOKENIZER
    _TOKENIZER = Tokenizer.from_str(tokenizer_json)
    _TOKENIZER.encode_special_tokens = True  # a literal "<|endoftext|>" inside a document is text


def encode(texts: list[str], dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, lengths): every text's ids followed by the end-of-document id, and each document's length."""
    eod = _TOKENIZER.token_to_id(END_OF_DOCUMENT)
    encodings = _TOKENIZER.encode_batch(texts, add_special_tokens=False)
    lengths = np.fromiter((len(e.ids) + 1 for e in encodings), dtype=np.int64, count=len(encodings))
    flat = np.fromiter(itertools.chain.from_iterable(itertools.chain(e.ids, (eod,)) for e in encodings),
                       dtype=DTYPES[dtype], count=int(lengths.sum()))
    return flat, lengths
