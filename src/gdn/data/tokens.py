"""Language modelling on a prepared token dataset (gdn-prepare-data): memory-mapped shards, fixed-length windows.

The training split's shards form one token stream; row r is the window stream[r L : r L + L + 1] (inputs the
first L tokens, labels the last L), so any seq_len reads the same files. Document starts come from the shards'
offsets. Training rows are visited in a seeded pseudo-random order per epoch (gdn.data.permutation), computed row
by row: nothing held in memory grows with the dataset but the shards' offsets, which stay memory-mapped too.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from gdn.data import packing, shards
from gdn.data.batch import Batch
from gdn.data.permutation import permute
from gdn.data.tokenizer import load_tokenizer


class TokenStream:
    """The concatenated tokens and document starts of some shards, read by position without loading them."""

    def __init__(self, folder: Path, records: list[dict], dtype: str):
        self.dtype = shards.DTYPES[dtype]
        self._tokens = [np.memmap(folder / f"{r['stem']}.bin", dtype=self.dtype, mode="r",
                                  shape=(r["tokens"],)) for r in records]
        self._offsets = [np.load(folder / f"{r['stem']}.idx.npy", mmap_mode="r") for r in records]
        self._first = np.concatenate([[0], np.cumsum([r["tokens"] for r in records], dtype=np.int64)])
        self.num_tokens = int(self._first[-1])

    def read(self, start: int, stop: int) -> np.ndarray:
        pieces = []
        for s in self._shards_between(start, stop):
            base = self._first[s]
            pieces.append(self._tokens[s][max(start - base, 0) : min(stop - base, len(self._tokens[s]))])
        return np.concatenate(pieces) if len(pieces) > 1 else np.asarray(pieces[0])

    def windows(self, starts: np.ndarray, width: int) -> np.ndarray:
        """[R, width] tokens, row i the stream's tokens [starts[i], starts[i] + width)."""
        first, last = self._shard_of(starts), self._shard_of(starts + width - 1)
        out = np.empty((len(starts), width), dtype=self.dtype)
        for i, (start, s) in enumerate(zip(starts.tolist(), first.tolist())):
            if s == last[i]:  # the usual case: inside one shard
                local = start - int(self._first[s])
                out[i] = self._tokens[s][local : local + width]
            else:
                out[i] = self.read(start, start + width)
        return out

    def document_start_mask(self, starts: np.ndarray, width: int) -> np.ndarray:
        """[R, width] bool, True at j where a document begins at stream position starts[i] + j. One vectorised
        search per shard touched, not one per row: this runs on every training step."""
        mask = np.zeros((len(starts), width), dtype=bool)
        first, last = self._shard_of(starts), self._shard_of(starts + width - 1)
        touched = sorted({s for a, b in zip(first.tolist(), last.tolist()) for s in range(a, b + 1)})
        for s in touched:
            offsets, local = self._offsets[s], starts - self._first[s]  # local < 0: the row starts before shard s
            lo = np.searchsorted(offsets, local, side="left")
            counts = np.searchsorted(offsets, local + width, side="left") - lo
            if counts.sum() == 0:
                continue
            row = np.repeat(np.arange(len(starts)), counts)
            index = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(lo, counts)
            mask[row, np.asarray(offsets[index]) - local[row]] = True
        return mask

    def _shard_of(self, positions: np.ndarray) -> np.ndarray:
        return np.searchsorted(self._first, positions, side="right") - 1

    def _shards_between(self, start: int, stop: int) -> range:
        first = int(np.searchsorted(self._first, start, side="right")) - 1
        last = int(np.searchsorted(self._first, stop, side="left"))
        return range(max(first, 0), min(last, len(self._tokens)))


class TokenData:
    """Packed next-token batches from a prepared token dataset; train_batch(index) depends only on (seed, index).

    path: the folder gdn-prepare-data wrote. tokenizer: the tokenizer.json the run expects (checked against the
        dataset's), or None to use the dataset's. eval_sequences: the validation tokens evaluated, in rows of seq_len
        (None: all).
    verify: check every shard's sha256 at open (slow on large datasets; sizes are always checked).
    """

    def __init__(self, path: str, tokenizer: str | Path | None = None, *, seq_len: int, batch_size: int,
                 seed: int = 0, eval_sequences: int | None = None, verify: bool = False, vocab_size: int = 0):
        if seq_len < 1 or batch_size < 1 or seed < 0:
            raise ValueError(f"need seq_len >= 1, batch_size >= 1, seed >= 0; got {seq_len}, {batch_size}, {seed}")
        if eval_sequences is not None and not (isinstance(eval_sequences, int) and eval_sequences >= 1):
            raise ValueError(f"eval_sequences must be a row count >= 1 or null (every validation row), "
                             f"got {eval_sequences}")
        folder = Path(path).expanduser()
        manifest = shards.read_manifest(folder)
        shards.check_shards(folder, manifest, full=verify)
        self.tokenizer_path = folder / shards.TOKENIZER
        self.tokenizer = load_tokenizer(self.tokenizer_path)
        if tokenizer is not None and load_tokenizer(tokenizer).to_str() != self.tokenizer.to_str():
            raise ValueError(f"{folder / shards.MANIFEST} was prepared with the tokenizer {self.tokenizer_path}, "
                             f"not the run's {tokenizer}: prepare the data again with --tokenizer {tokenizer}, "
                             f"or set data.tokenizer=null to use the dataset's")
        self.manifest = manifest
        self.seq_len, self.batch_size, self.seed, self.eval_sequences = seq_len, batch_size, seed, eval_sequences
        self.end_of_document = manifest["tokenizer"]["end_of_document"]
        self.vocab_size = -(-max(vocab_size, manifest["tokenizer"]["vocab_size"]) // 64) * 64
        self._train = TokenStream(folder, [r for r in manifest["shards"] if r["split"] == "train"], manifest["dtype"])
        self._val = TokenStream(folder, [r for r in manifest["shards"] if r["split"] == "val"], manifest["dtype"])
        self.num_train_rows = max(self._train.num_tokens - 1, 0) // seq_len
        self.batches_per_epoch = self.num_train_rows // batch_size
        if self.batches_per_epoch < 1:
            raise ValueError(f"{folder}'s training split holds {self._train.num_tokens} tokens, "
                             f"{self.num_train_rows} rows of seq_len {seq_len}: fewer than one batch of {batch_size}")

    def train_batch(self, index: int) -> Batch:
        """Batch `index % batches_per_epoch` of epoch `index // batches_per_epoch`'s permutation of the rows."""
        return self.train_rows(index, 0, 1)

    def train_rows(self, index: int, rank: int, world_size: int) -> Batch:
        """Rank `rank`'s contiguous slice of train_batch(index)'s rows (gdn.train.sharding), reading only those."""
        if index < 0:
            raise ValueError(f"batch index must be >= 0, got {index}")
        if self.batch_size % world_size:
            raise ValueError(f"data.batch_size {self.batch_size} is not divisible by the {world_size} data-parallel "
                             f"ranks; set data.batch_size to a multiple of {world_size}")
        epoch, step = divmod(index, self.batches_per_epoch)
        per_rank = self.batch_size // world_size
        first = step * self.batch_size + rank * per_rank
        row_ids = permute(np.arange(first, first + per_rank), self.num_train_rows, self.seed, epoch)
        return self._batch(self._train, row_ids, self.seq_len)

    def eval_batches(self, seq_len: int | None = None) -> list[Batch]:
        """The validation split in rows of seq_len (default the training length; e.g. twice that for length
        extrapolation), in order, in batches of batch_size (the last may be smaller). Evaluated are the first
        eval_sequences rows' worth of tokens at the training length, whatever the length; a tail shorter than one
        row is left out."""
        length = seq_len or self.seq_len
        held_out = self._val.num_tokens
        if self.eval_sequences is not None:  # a token budget: other lengths cut the same tokens
            held_out = min(held_out, self.eval_sequences * self.seq_len + 1)
        num_rows = max(held_out - 1, 0) // length
        ids = np.arange(num_rows)
        return [self._batch(self._val, ids[i : i + self.batch_size], length)
                for i in range(0, num_rows, self.batch_size)]

    @staticmethod
    def _batch(stream: TokenStream, row_ids: np.ndarray, length: int) -> Batch:
        starts = np.asarray(row_ids, dtype=np.int64) * length
        return packing.batch_from_windows(stream.windows(starts, length + 1),
                                          stream.document_start_mask(starts, length + 1))
