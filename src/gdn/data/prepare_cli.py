"""`gdn-prepare-data SOURCE OUT`: tokenise a corpus into memory-mapped shards for `data=tokens data.path=OUT`.

    gdn-prepare-data corpus/ out/ --vocab-size 32768 --num-proc 8        # train a tokenizer on a sample
    gdn-prepare-data HuggingFaceFW/fineweb-edu out/ --name sample-10BT --tokenizer llama2/tokenizer.json --num-proc 64
    gdn-prepare-data --verify out/                                        # check every shard's sha256
Run it again on the same OUT to resume an interrupted preparation.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from gdn.data import shards


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gdn-prepare-data", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", nargs="?", help="a txt/json/jsonl/parquet file or folder, or a hub dataset name")
    parser.add_argument("out", help="the folder to write (or, with --verify, to check)")
    parser.add_argument("--verify", action="store_true", help="check OUT's shards against the manifest's sha256")
    parser.add_argument("--tokenizer", help="a Hugging Face tokenizers tokenizer.json (default: train one)")
    parser.add_argument("--vocab-size", type=int, default=32768, help="vocabulary of the tokenizer trained")
    parser.add_argument("--tokenizer-sample-bytes", type=int, default=1 << 28,
                        help="characters of text the tokenizer is trained on (the first documents)")
    parser.add_argument("--num-proc", type=int, default=1, help="tokenising processes")
    parser.add_argument("--text-field", default="text", help="the column holding the text (json/jsonl/parquet/hub)")
    parser.add_argument("--name", help="hub dataset configuration, e.g. sample-10BT")
    parser.add_argument("--split", default="train", help="hub dataset split")
    parser.add_argument("--val-docs", type=int, default=1000, help="the first N documents are the validation split")
    parser.add_argument("--shard-tokens", type=int, default=1 << 27, help="tokens per shard (the last may be smaller)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "uint16", "uint32"])
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if not args.verify and args.source is None:
        parser.error("give SOURCE and OUT (or --verify OUT)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.verify:
        out = Path(args.out if args.source is None else args.source)
        manifest = shards.read_manifest(out)
        shards.check_shards(out, manifest, full=True)
        print(f"{out}: {len(manifest['shards'])} shards, {manifest['num_tokens']:,} tokens: every sha256 matches")
        return
    from gdn.data.prepare import prepare  # here: the tokenising processes import this module without datasets

    manifest = prepare(args.source, args.out, tokenizer=args.tokenizer, vocab_size=args.vocab_size,
                       num_proc=args.num_proc, text_field=args.text_field, name=args.name, split=args.split,
                       val_docs=args.val_docs, shard_tokens=args.shard_tokens, dtype=args.dtype,
                       tokenizer_sample_bytes=args.tokenizer_sample_bytes, progress=not args.no_progress)
    print(f"{args.out}: {manifest['num_documents']:,} documents, {manifest['num_tokens']:,} tokens "
          f"({manifest['dtype']}, {len(manifest['shards'])} shards); train with data=tokens data.path={args.out}")


if __name__ == "__main__":
    main()
