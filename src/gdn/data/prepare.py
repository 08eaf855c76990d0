"""Prepare a token dataset: stream documents -> tokenise in N processes -> fixed-budget shards -> manifest.

Memory stays bounded: documents are streamed, tokenised a chunk at a time with a bounded number of chunks in
flight, and written straight to the open shard file. The assignment of documents to shards depends only on the
source, the tokenizer and the settings (a shard closes after the document that fills its token budget), so an
interrupted preparation resumes after its last finished shard and ends with the same files as one run.
The layout is described in gdn.data.shards.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from gdn.data import encoding, shards, sources
from gdn.data.tokenizer import end_of_document_id, load_tokenizer, train_bpe_tokenizer

CHUNK_DOCUMENTS = 512  # documents per tokenisation task
SETTINGS = "prepare.json"  # the settings of a preparation in progress; folded into the manifest at the end


class PrepareStopped(RuntimeError):
    """Raised by the stop_after_shards test hook, as if the preparation had been killed."""


def prepare(
    source: str,
    out: str | Path,
    *,
    tokenizer: str | Path | None = None,
    vocab_size: int = 32768,
    num_proc: int = 1,
    text_field: str = "text",
    name: str | None = None,
    split: str = "train",
    val_docs: int = 1000,
    shard_tokens: int = 1 << 27,
    dtype: str = "auto",
    tokenizer_sample_bytes: int = 1 << 28,
    progress: bool = True,
    stop_after_shards: int | None = None,
) -> dict:
    """Prepares `source` into `out` (resuming a preparation stopped there) and returns the manifest."""
    if num_proc < 1 or shard_tokens < 1 or val_docs < 0:
        raise ValueError(f"need num_proc >= 1, shard_tokens >= 1, val_docs >= 0; got {num_proc}, {shard_tokens}, "
                         f"{val_docs}")
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    given = None if tokenizer is None else load_tokenizer(tokenizer)
    settings = {
        "source": {"path": source, "fingerprint": sources.fingerprint(source), "name": name, "split": split,
                   "text_field": text_field},
        "tokenizer": ({"sha256": _sha256_text(given.to_str())} if given is not None
                      else {"train_vocab_size": vocab_size, "sample_bytes": tokenizer_sample_bytes}),
        "val_docs": val_docs, "shard_tokens": shard_tokens, "dtype": dtype,
    }
    if (out / shards.MANIFEST).is_file():
        manifest = shards.read_manifest(out)
        _same_settings(manifest["settings"], settings, out / shards.MANIFEST)
        return manifest
    if (out / SETTINGS).is_file():
        _same_settings(json.loads((out / SETTINGS).read_text()), settings, out / SETTINGS)
    else:
        shards.write_json_atomically(out / SETTINGS, settings)

    tok = _tokenizer(out, given, source, text_field, name, split, vocab_size, tokenizer_sample_bytes)
    out_dtype = shards.dtype_for(tok.get_vocab_size(), dtype, str(tokenizer or out / shards.TOKENIZER))
    finished = _finished_shards(out)
    skip = sum(record["documents"] for record in finished)
    writer = _ShardWriter(out, out_dtype, shard_tokens, val_docs, first_shard=len(finished), first_document=skip,
                          stop_after=stop_after_shards)
    documents = itertools.islice(sources.stream_documents(source, text_field, name, split), skip, None)
    bar = tqdm(desc=f"prepare {out.name}", unit="doc", disable=not progress, initial=skip,
               total=sources.record_count(source, name, split) if progress else None)
    started, tokens = time.perf_counter(), 0
    for chunk_tokens, lengths in _encoded_chunks(documents, tok.to_str(), out_dtype, num_proc):
        writer.add(chunk_tokens, lengths)
        tokens += len(chunk_tokens)
        bar.update(len(lengths))
        bar.set_postfix_str(f"{tokens / (time.perf_counter() - started) / 1e6:.2f}M tokens/s")
    bar.close()
    writer.close_shard()
    return _write_manifest(out, settings, tok, out_dtype, finished + writer.records, source)


def _tokenizer(out: Path, given: Tokenizer | None, source: str, text_field: str, name: str | None, split: str,
               vocab_size: int, sample_bytes: int) -> Tokenizer:
    """The given tokenizer, or one trained on the first sample_bytes of text; saved as out/tokenizer.json."""
    path = out / shards.TOKENIZER
    if given is None and path.is_file():  # trained by the interrupted run (the settings matched)
        return load_tokenizer(path)
    if given is None:
        given = train_bpe_tokenizer(_batched(_sample(sources.stream_documents(source, text_field, name, split),
                                                     sample_bytes), 1024), vocab_size)
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    given.save(str(partial))
    os.replace(partial, path)
    return given


def _sample(documents: Iterator[str], budget: int) -> Iterator[str]:
    used = 0
    for text in documents:
        if used >= budget:
            return
        used += len(text)
        yield text


def _batched(items, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def _encoded_chunks(documents: Iterator[str], tokenizer_json: str, dtype: str,
                    num_proc: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The documents' tokens a chunk at a time, in document order, from num_proc processes (each one thread)."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per process: num_proc is the whole budget
    chunks = _batched(documents, CHUNK_DOCUMENTS)
    if num_proc == 1:
        encoding.init_worker(tokenizer_json)
        yield from (encoding.encode(chunk, dtype) for chunk in chunks)
        return
    context = multiprocessing.get_context("spawn")  # fork after tokenizers' threads ran may deadlock
    with context.Pool(num_proc, initializer=encoding.init_worker, initargs=(tokenizer_json,)) as pool:
        in_flight = []  # bounded: at most 2 chunks per process are tokenised or waiting
        for chunk in chunks:
            in_flight.append(pool.apply_async(encoding.encode, (chunk, dtype)))
            if len(in_flight) >= 2 * num_proc:
                yield in_flight.pop(0).get()
        for result in in_flight:
            yield result.get()


class _ShardWriter:
    """Appends documents to the open shard; closes it once it holds shard_tokens tokens or the split changes."""

    def __init__(self, out: Path, dtype: str, shard_tokens: int, val_docs: int, first_shard: int,
                 first_document: int, stop_after: int | None):
        self.out, self.dtype, self.budget, self.val_docs = out, dtype, shard_tokens, val_docs
        self.next_shard, self.document = first_shard, first_document
        self.stop_after = stop_after
        self.records: list[dict] = []
        self._open: dict | None = None

    def add(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        token_starts = np.concatenate([[0], np.cumsum(lengths)])
        pos = 0
        while pos < len(lengths):
            split = "val" if self.document < self.val_docs else "train"
            if self._open is not None and self._open["split"] != split:
                self.close_shard()
            if self._open is None:
                self._open_shard(split)
            limit = len(lengths) if split == "train" else min(len(lengths), pos + self.val_docs - self.document)
            filled = token_starts[pos + 1 : limit + 1] - token_starts[pos]
            take = min(int(np.searchsorted(filled, self.budget - self._open["tokens"])) + 1, limit - pos)
            self._write(tokens[token_starts[pos] : token_starts[pos + take]], lengths[pos : pos + take])
            pos += take
            self.document += take
            if self._open["tokens"] >= self.budget:
                self.close_shard()

    def _open_shard(self, split: str) -> None:
        stem = shards.shard_stem(self.next_shard)
        partial = self.out / f"{stem}.bin.tmp"
        self._open = {"split": split, "stem": stem, "tokens": 0, "partial": partial, "file": open(partial, "wb"),
                      "sha": hashlib.sha256(), "lengths": []}

    def _write(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        data = tokens.tobytes()
        self._open["file"].write(data)
        self._open["sha"].update(data)
        self._open["lengths"].append(lengths)
        self._open["tokens"] += len(tokens)

    def close_shard(self) -> None:
        """Finishes the open shard: tokens, then offsets, then its record (the mark that it is complete)."""
        shard, self._open = self._open, None
        if shard is None:
            return
        shard["file"].close()
        stem = self.out / shard["stem"]
        os.replace(shard["partial"], stem.with_suffix(".bin"))
        offsets = np.concatenate([[0], np.cumsum(np.concatenate(shard["lengths"]))]).astype(np.int64)
        index_partial = self.out / f"{shard['stem']}.idx.tmp.npy"
        np.save(index_partial, offsets)
        os.replace(index_partial, self.out / f"{shard['stem']}.idx.npy")
        record = {"stem": shard["stem"], "split": shard["split"], "tokens": shard["tokens"],
                  "documents": len(offsets) - 1, "bytes": stem.with_suffix(".bin").stat().st_size,
                  "sha256": shard["sha"].hexdigest(),
                  "index_sha256": shards.sha256_file(self.out / f"{shard['stem']}.idx.npy")}
        shards.write_json_atomically(self.out / f"{shard['stem']}.json", record)
        self.records.append(record)
        self.next_shard += 1
        if self.stop_after is not None and len(self.records) >= self.stop_after:
            raise PrepareStopped(f"stopped after {len(self.records)} shards (test hook)")


def _finished_shards(out: Path) -> list[dict]:
    """The records of shards 0, 1, ... that a previous run finished and whose files are whole; removes the rest
    (half-written files, and any shard after a missing or truncated one, which is written again)."""
    records = []
    while (out / f"{shards.shard_stem(len(records))}.json").is_file():
        record = json.loads((out / f"{shards.shard_stem(len(records))}.json").read_text())
        tokens, index = out / f"{record['stem']}.bin", out / f"{record['stem']}.idx.npy"
        if not (tokens.is_file() and index.is_file() and tokens.stat().st_size == record["bytes"]):
            break
        records.append(record)
    for stale in out.glob("shard-*"):
        if int(stale.name[6:11]) >= len(records):
            stale.unlink()
    return records


def _write_manifest(out: Path, settings: dict, tok: Tokenizer, dtype: str, records: list[dict], source: str) -> dict:
    split_totals = {split: {"documents": sum(r["documents"] for r in records if r["split"] == split),
                            "tokens": sum(r["tokens"] for r in records if r["split"] == split)}
                    for split in ("train", "val")}
    if not records:
        raise ValueError(f"{source!r} holds no documents (every record is empty or whitespace): give a source "
                         f"with text")
    if split_totals["train"]["documents"] == 0:
        raise ValueError(f"all {split_totals['val']['documents']} documents of {source!r} went to the validation "
                         f"split: lower --val-docs (it is {settings['val_docs']})")
    manifest = {
        "format": shards.FORMAT, "settings": settings, "source": settings["source"],
        "tokenizer": {"file": shards.TOKENIZER, "sha256": shards.sha256_file(out / shards.TOKENIZER),
                      "vocab_size": tok.get_vocab_size(), "end_of_document": end_of_document_id(tok)},
        "dtype": dtype, "num_tokens": sum(r["tokens"] for r in records),
        "num_documents": sum(r["documents"] for r in records), "splits": split_totals, "shards": records,
    }
    shards.write_json_atomically(out / shards.MANIFEST, manifest)
    (out / SETTINGS).unlink(missing_ok=True)
    return manifest


def _same_settings(found: dict, wanted: dict, where: Path) -> None:
    if found != wanted:
        raise ValueError(f"{where} was written by a preparation with other settings ({found}, this one: {wanted}): "
                         f"prepare into another folder, or delete {where.parent} to start again")


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
