"""Where documents come from: local .txt/.json/.jsonl/.parquet files, or a Hugging Face hub dataset.

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


def load_documents(path: str, text_field: str, cache_dir: Path) -> datasets.Dataset:
    """A dataset with a single "text" column: every document of `path`, files in sorted order."""
    local = Path(path).expanduser()
    if not local.exists():
        return _load_hub(path, text_field, cache_dir)
    files = local_files(local)
    parts = []
    for builder in sorted({BUILDERS[f.suffix] for f in files}):
        part = datasets.load_dataset(
            builder,
            data_files=[str(f) for f in files if BUILDERS[f.suffix] == builder],
            split="train",
            cache_dir=str(cache_dir),
            **({"sample_by": "paragraph"} if builder == "text" else {}),
        )
        parts.append(_text_column(part, "text" if builder == "text" else text_field, path))
    return datasets.concatenate_datasets(parts)


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


def text_batches(dataset: datasets.Dataset, batch_size: int = 1024) -> Iterator[list[str]]:
    """The non-empty documents, in dataset order, in lists of up to batch_size."""
    for batch in dataset.iter(batch_size=batch_size):
        yield [text for text in batch["text"] if text and not text.isspace()]


def _load_hub(path: str, text_field: str, cache_dir: Path) -> datasets.Dataset:
    missing = f"data path {path!r} does not exist: expected {EXPECTED}"
    if Path(path).is_absolute() or Path(path).suffix in BUILDERS:  # clearly meant as a local path
        raise FileNotFoundError(missing)
    try:
        dataset = datasets.load_dataset(path, split="train", cache_dir=str(cache_dir))
    except Exception as err:
        raise FileNotFoundError(missing) from err
    return _text_column(dataset, text_field, path)


def _text_column(dataset: datasets.Dataset, text_field: str, path: str) -> datasets.Dataset:
    if text_field not in dataset.column_names:
        raise ValueError(f"{path!r} has no text field {text_field!r}; its columns are {dataset.column_names}")
    dataset = dataset.select_columns([text_field])
    return dataset if text_field == "text" else dataset.rename_column(text_field, "text")


def stream_documents(
    path: str, text_field: str = "text", name: str | None = None, split: str = "train"
) -> Iterator[str]:
    """The non-empty documents of `path` one by one, never holding the source in memory: local files (sorted, as
    load_documents) or a hub dataset, both through `datasets.load_dataset(..., streaming=True)`."""
    local = Path(path).expanduser()
    if local.exists():
        for file in local_files(local):  # one file at a time keeps the sorted file order across formats
            builder = BUILDERS[file.suffix]
            stream = datasets.load_dataset(
                builder, data_files=[str(file)], split="train", streaming=True,
                **({"sample_by": "paragraph"} if builder == "text" else {}),
            )
            yield from _texts(stream, "text" if builder == "text" else text_field, str(file))
        return
    if Path(path).is_absolute() or Path(path).suffix in BUILDERS:
        raise FileNotFoundError(f"data path {path!r} does not exist: expected {EXPECTED}")
    try:
        stream = datasets.load_dataset(path, name=name, split=split, streaming=True)
    except Exception as err:
        raise FileNotFoundError(f"data path {path!r} does not exist: expected {EXPECTED}") from err
    yield from _texts(stream, text_field, path)


def _texts(records, text_field: str, where: str) -> Iterator[str]:
    for record in records:
        if text_field not in record:
            raise ValueError(f"{where!r} has no text field {text_field!r}; its fields are {sorted(record)}: "
                             f"pass the right one with --text-field (data.text_field)")
        text = record[text_field]
        if text and not text.isspace():
            yield text
