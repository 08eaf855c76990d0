"""The on-disk layout of a prepared token dataset (written by gdn.data.prepare, read by gdn.data.tokens).

    OUT/tokenizer.json            the tokenizer the tokens were made with
    OUT/shard-00000.bin           raw tokens (uint16 or uint32): every document followed by the end-of-document token
    OUT/shard-00000.idx.npy       int64 offsets of the documents in that shard (documents + 1 entries, 0 ... tokens)
    OUT/shard-00000.json          the shard's record: split, tokens, documents, bytes, sha256; written last, so a
                                  shard is finished exactly when its record exists
    OUT/manifest.json             the whole dataset (source, tokenizer, counts, dtype, shards); written last of all

Shards are numbered in document order; the validation documents (the first ones of the source) fill the first
shards, the training documents the rest, so a shard never mixes the two splits.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

FORMAT = 1
MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
DTYPES = {"uint16": np.uint16, "uint32": np.uint32}


def shard_stem(index: int) -> str:
    return f"shard-{index:05d}"


def dtype_for(vocab_size: int, requested: str = "auto", tokenizer: str = "the tokenizer") -> str:
    """uint16 when every token id fits (vocab_size <= 65536), else uint32; a requested dtype too small is an error."""
    fits = "uint16" if vocab_size <= 2**16 else "uint32"
    if requested == "auto":
        return fits
    if requested not in DTYPES:
        raise ValueError(f"dtype must be auto, uint16 or uint32, got {requested!r}")
    if np.iinfo(DTYPES[requested]).max < vocab_size - 1:
        raise ValueError(f"{tokenizer}'s vocabulary of {vocab_size} tokens does not fit {requested} (ids up to "
                         f"{np.iinfo(DTYPES[requested]).max}): use --dtype uint32 or --dtype auto")
    return requested


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomically(path: Path, content: dict) -> None:
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(content, indent=1))
    os.replace(partial, path)  # a reader sees the whole file or none


def read_manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {folder} is not a prepared token dataset (or its "
                                f"preparation did not finish); run `gdn-prepare-data SOURCE {folder}` first")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path} has format {manifest.get('format')}, this gdn reads format {FORMAT}: prepare "
                         f"the data again with this version's gdn-prepare-data")
    return manifest


def check_shards(folder: Path, manifest: dict, full: bool = False) -> None:
    """Every shard file exists with the manifest's size (cheap, at every open); with full, also its sha256."""
    itemsize = np.dtype(DTYPES[manifest["dtype"]]).itemsize
    for shard in manifest["shards"]:
        tokens, index = folder / f"{shard['stem']}.bin", folder / f"{shard['stem']}.idx.npy"
        fix = f"prepare it again: gdn-prepare-data {manifest['source']['path']} {folder}"
        for path in (tokens, index):
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing but {folder / MANIFEST} lists it: {fix}")
        if tokens.stat().st_size != shard["tokens"] * itemsize:
            raise ValueError(f"{tokens} holds {tokens.stat().st_size} bytes, the manifest says "
                             f"{shard['tokens'] * itemsize} (truncated or replaced?): {fix}")
        if full and sha256_file(tokens) != shard["sha256"]:
            raise ValueError(f"{tokens} does not match its sha256 in {folder / MANIFEST} (corrupted): {fix}")
        if full and sha256_file(index) != shard["index_sha256"]:
            raise ValueError(f"{index} does not match its sha256 in {folder / MANIFEST} (corrupted): {fix}")
