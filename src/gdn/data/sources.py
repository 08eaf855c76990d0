"""Where documents come from: local .txt/.json/.jsonl/.parquet files, or a Hugging Face hub dataset, streamed.

A .txt file holds documents separated by a blank line; json, jsonl and parquet hold one document per record,
in the `text_field` column.
"""
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import datasets

BUILDERS = {".txt": "text", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
EXPECTED = "a file or folder of .txt/.json/.jsonl/.parquet files, or a reachable Hugging Face hub dataset name"


def local_files(path: Path) -> list[Path]:
    """The data files of a local file or folder (searched recursively), sorted; raises if there are none."""
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in BUILDERS) if path.is_dir() else [path]
    if not files or files[0].suffix not in BUILDERS:
        raise ValueError(f"no usable data in {str(path)!r}: expected {EXPECTED}")
    return files


def fingerprint(path: str) -> str:
    """Identifies the source's content for caching: file names, sizes and modification times, or the hub name."""
    local = Path(path).expanduser()
    if not local.exists():
        return json.dumps({"hub": path})
    stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in local_files(local)]
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()


def stream_documents(
    path: str, text_field: str = "text", name: str | None = None, split: str = "train"
) -> Iterator[str]:
    """The non-empty documents of `path` one by one, never holding the source in memory: local files (in sorted
    order) or a hub dataset, both through `datasets.load_dataset(..., streaming=True)`."""
    local = Path(path).expanduser()
    if local.exists():
        for file in local_files(local):  # one file at a time keeps the sorted file order across formats
            if file.stat().st_size == 0:  # no records (datasets' json builder fails on it with a bare StopIteration)
                continue
            builder = BUILDERS[file.suffix]
            stream = datasets.load_dataset(
                builder, data_files=[str(file)], split="train", streaming=True,
                **({"sample_by": "paragraph"} if builder == "text" else {}),
            )
            yield from _texts(stream, "text" if builder == "text" else text_field, str(file))
        return
    missing = f"data path {path!r} does not exist: expected {EXPECTED}"
    if Path(path).is_absolute() or Path(path).suffix in BUILDERS:  # clearly meant as a local path
        raise FileNotFoundError(missing)
    try:
        stream = datasets.load_dataset(path, name=name, split=split, streaming=True)
    except Exception as err:
        raise FileNotFoundError(missing) from err
    yield from _texts(stream, text_field, path)


def record_count(path: str, name: str | None = None, split: str = "train") -> int | None:
    """The number of records where it is known without reading the data (parquet footers, a hub dataset's
    metadata), for a progress bar's ETA; empty records among them are skipped later. None where unknown."""
    local = Path(path).expanduser()
    try:
        if local.exists():
            files = local_files(local)
            if any(f.suffix != ".parquet" for f in files):
                return None
            import pyarrow.parquet as pq

            return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        return datasets.load_dataset_builder(path, name).info.splits[split].num_examples
    except Exception:  # a count is a nicety: no count, no ETA
        return None


def _texts(records, text_field: str, where: str) -> Iterator[str]:
    for record in records:
        if text_field not in record:
            raise ValueError(f"{where!r} has no text field {text_field!r}; its fields are {sorted(record)}: "
                             f"pass the right one with --text-field (data.text_field)")
        text = record[text_field]
        if text and not text.isspace():
            yield text
