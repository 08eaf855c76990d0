"""Language modelling on text: documents -> HF tokenizers -> packed rows with document boundaries.

The tokenised stream is cached in cache_dir, in a folder keyed by the source's fingerprint and every setting
that changes the tokens, together with the tokenizer trained for it; a second run reads it back without
loading the documents or tokenising again.
"""
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from gdn.data import packing, sources
from gdn.data.batch import Batch
from gdn.data.seeding import seeded_generator
from gdn.data.tokenizer import end_of_document_id, load_tokenizer, train_bpe_tokenizer

_CACHE_FORMAT = 1  # bump when the cached layout or the packing changes


class TextData:
    """Packed next-token batches; train_batch(index) depends only on (seed, index).

    path: a .txt/.json/.jsonl/.parquet file or a folder of them, or a Hugging Face hub dataset name.
    tokenizer: a HF tokenizers tokenizer.json, or None to train a byte-level BPE tokenizer of vocab_size on the
        corpus (saved as `tokenizer_path`). The model's vocab_size is the larger of the two, rounded up to 64.
    eval_sequences: how many of the last packed rows are held out for evaluation, or which fraction of them.
    """

    def __init__(
        self,
        path: str,
        tokenizer: str | Path | None = None,
        *,
        vocab_size: int = 8192,
        seq_len: int,
        batch_size: int,
        seed: int = 0,
        eval_sequences: int | float = 0.01,
        cache_dir: str = "~/.cache/gdn/data",
        text_field: str = "text",
    ):
        _validate(vocab_size, seq_len, batch_size, seed, eval_sequences)
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.seed = seed

        given_tokenizer = None if tokenizer is None else load_tokenizer(tokenizer)
        cache = _cache_folder(path, given_tokenizer, vocab_size, seq_len, text_field, cache_dir)
        self.tokenizer, self._stream = _load_or_build(cache, path, given_tokenizer, vocab_size, seq_len, text_field)
        self.tokenizer_path = cache / "tokenizer.json" if given_tokenizer is None else Path(tokenizer)
        self.end_of_document = end_of_document_id(self.tokenizer)
        self.vocab_size = _round_up(max(vocab_size, self.tokenizer.get_vocab_size()), 64)

        total_rows = packing.num_rows(self._stream, seq_len)
        num_eval = eval_sequences if isinstance(eval_sequences, int) else max(1, round(eval_sequences * total_rows))
        self.num_train_rows = total_rows - num_eval
        self.eval_row_ids = range(self.num_train_rows, total_rows)
        self.batches_per_epoch = self.num_train_rows // batch_size
        if self.batches_per_epoch < 1:
            raise ValueError(
                f"{path!r} packs into {total_rows} rows of seq_len {seq_len}; after {num_eval} eval rows, "
                f"{max(self.num_train_rows, 0)} are left for training, fewer than one batch of {batch_size}"
            )
        self._epoch_order: tuple[int, torch.Tensor] | None = None

    def train_batch(self, index: int) -> Batch:
        """Batch `index % batches_per_epoch` of epoch `index // batches_per_epoch`'s permutation of the rows."""
        if index < 0:
            raise ValueError(f"batch index must be >= 0, got {index}")
        epoch, step = divmod(index, self.batches_per_epoch)
        order = self._train_order(epoch)
        row_ids = order[step * self.batch_size : (step + 1) * self.batch_size].tolist()
        return packing.batch_from_rows(packing.rows(self._stream, self.seq_len, row_ids), self.end_of_document)

    def eval_batches(self, seq_len: int | None = None) -> list[Batch]:
        """The held-out last rows of the corpus, in order, in batches of batch_size (the last may be smaller).
        With seq_len (e.g. twice the training length, for length extrapolation) the same held-out tokens are cut
        into rows of that length instead; a tail shorter than one row is left out."""
        if seq_len is None:
            stream, length, ids = self._stream, self.seq_len, list(self.eval_row_ids)
        else:
            stream, length = self._stream[self.eval_row_ids.start * self.seq_len :], seq_len
            ids = list(range(packing.num_rows(stream, seq_len)))
        return [
            packing.batch_from_rows(packing.rows(stream, length, ids[i : i + self.batch_size]), self.end_of_document)
            for i in range(0, len(ids), self.batch_size)
        ]

    def _train_order(self, epoch: int) -> torch.Tensor:
        if self._epoch_order is None or self._epoch_order[0] != epoch:
            generator = seeded_generator(self.seed, epoch)
            self._epoch_order = (epoch, torch.randperm(self.num_train_rows, generator=generator))
        return self._epoch_order[1]


def _cache_folder(
    path: str, given_tokenizer: Tokenizer | None, vocab_size: int, seq_len: int, text_field: str, cache_dir: str
) -> Path:
    settings = {
        "format": _CACHE_FORMAT,
        "source": sources.fingerprint(path),
        "text_field": text_field,
        "tokenizer": {"bpe_vocab_size": vocab_size} if given_tokenizer is None else given_tokenizer.to_str(),
        "seq_len": seq_len,
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir).expanduser() / f"{Path(path).name}-{key}"


def _load_or_build(
    cache: Path, path: str, given_tokenizer: Tokenizer | None, vocab_size: int, seq_len: int, text_field: str
) -> tuple[Tokenizer, np.ndarray]:
    stream_file, tokenizer_file = cache / "tokens.npy", cache / "tokenizer.json"
    if stream_file.exists() and (given_tokenizer is not None or tokenizer_file.exists()):
        tokenizer = given_tokenizer or load_tokenizer(tokenizer_file)
        return tokenizer, np.load(stream_file, mmap_mode="r")

    cache.mkdir(parents=True, exist_ok=True)
    documents = sources.load_documents(path, text_field, cache.parent / "datasets")  # shared by all entries
    tokenizer = given_tokenizer
    if tokenizer is None:
        tokenizer = train_bpe_tokenizer(sources.text_batches(documents), vocab_size)
        tokenizer.save(str(tokenizer_file))

    # A literal "<|endoftext|>" inside a document is text, not a boundary.
    tokenizer.encode_special_tokens = True
    encoded = (
        [encoding.ids for encoding in tokenizer.encode_batch(texts, add_special_tokens=False)]
        for texts in sources.text_batches(documents)
    )
    stream = packing.token_stream(encoded, end_of_document_id(tokenizer), seq_len)
    tokenizer.encode_special_tokens = False

    partial = stream_file.with_name(f"{stream_file.name}.{os.getpid()}.partial")
    with open(partial, "wb") as f:
        np.save(f, stream)
    os.replace(partial, stream_file)  # atomic: a concurrent reader sees the whole file or none
    return tokenizer, np.load(stream_file, mmap_mode="r")


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _validate(vocab_size: int, seq_len: int, batch_size: int, seed: int, eval_sequences: int | float) -> None:
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    is_count = isinstance(eval_sequences, int) and eval_sequences >= 1
    is_fraction = isinstance(eval_sequences, float) and 0 < eval_sequences < 1
    if not (is_count or is_fraction):
        raise ValueError(f"eval_sequences must be a row count >= 1 or a fraction in (0, 1), got {eval_sequences}")
