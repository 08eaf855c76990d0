"""data=text: a corpus prepared into the cache on first use (gdn.data.prepare), then read as data=tokens.

There is one packing implementation: TextData is a TokenData over a prepared folder in cache_dir, keyed by the
source's fingerprint and every setting that changes the tokens (not seq_len: any length reads the same shards).
Under torchrun the global rank 0 prepares (or resumes the preparation); the other ranks wait for its manifest,
so cache_dir must be a folder every node sees.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from gdn.data import shards, sources
from gdn.data.prepare import prepare
from gdn.data.tokenizer import load_tokenizer
from gdn.data.tokens import TokenData

FAILED = "prepare.failed"  # rank 0 writes its error here, so the waiting ranks stop too
_POLL_S = 1.0


class TextData(TokenData):
    """Packed next-token batches of a text corpus; train_batch(index) depends only on (seed, index).

    path: a .txt/.json/.jsonl/.parquet file or a folder of them, or a Hugging Face hub dataset name.
    tokenizer: a HF tokenizers tokenizer.json, or None to train a byte-level BPE tokenizer of vocab_size on the
        corpus (saved beside the tokens as `tokenizer_path`). The model's vocab_size is the larger of the two,
        rounded up to 64.
    val_docs: the first documents of the corpus, held out for evaluation; eval_sequences: how many rows of
        seq_len of their tokens are evaluated. num_proc: tokenising processes of the first-use preparation.
    """

    def __init__(self, path: str, tokenizer: str | Path | None = None, *, vocab_size: int = 8192, seq_len: int,
                 batch_size: int, seed: int = 0, eval_sequences: int | None = 64, val_docs: int = 64,
                 cache_dir: str = "~/.cache/gdn/data", text_field: str = "text", num_proc: int = 1):
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        given = None if tokenizer is None else load_tokenizer(tokenizer)
        key = {"source": sources.fingerprint(path), "text_field": text_field, "val_docs": val_docs,
               "tokenizer": {"bpe_vocab_size": vocab_size} if given is None else given.to_str()}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        folder = Path(cache_dir).expanduser() / f"{Path(path).name}-{digest}"
        if int(os.environ.get("RANK", "0")) == 0:
            _prepare_or_record_failure(folder, path, tokenizer=tokenizer, vocab_size=vocab_size, num_proc=num_proc,
                                       text_field=text_field, val_docs=val_docs)
        else:
            _wait_for_manifest(folder)
        super().__init__(str(folder), seq_len=seq_len, batch_size=batch_size, seed=seed,
                         eval_sequences=eval_sequences, vocab_size=vocab_size)


def _prepare_or_record_failure(folder: Path, path: str, **settings) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / FAILED).unlink(missing_ok=True)
    try:
        prepare(path, folder, **settings)
    except Exception as err:
        (folder / FAILED).write_text(f"{type(err).__name__}: {err}")
        raise


def _wait_for_manifest(folder: Path) -> None:
    """Until rank 0's manifest appears (it is written last and atomically), or rank 0 records a failure."""
    while not (folder / shards.MANIFEST).is_file():
        if (folder / FAILED).is_file():
            raise RuntimeError(f"rank 0 failed to prepare {folder}: {(folder / FAILED).read_text()}")
        time.sleep(_POLL_S)
