"""A tiny synthetic corpus, written as txt, jsonl or parquet, for the text data tests."""
import json
import random
from pathlib import Path

import datasets

WORDS = (
    "delta gate state memory recall key value query token chunk decay rule linear attention kernel "
    "model layer head norm train batch loss step the a of to and in is on with for"
).split()


def synthetic_documents(num_documents: int = 300, seed: int = 0) -> list[str]:
    """Short documents of a few sentences; some span two lines, none contains a blank line, one quotes the
    end-of-document marker as plain text."""
    rng = random.Random(seed)
    documents = []
    for _ in range(num_documents):
        sentences = [
            " ".join(rng.choices(WORDS, k=rng.randint(3, 12))).capitalize() + "." for _ in range(rng.randint(1, 4))
        ]
        separator = "\n" if rng.random() < 0.2 else " "
        documents.append(separator.join(sentences))
    documents[7] = "The marker <|endoftext|> inside a document is plain text."
    return documents


def write_corpus(folder: Path, documents: list[str], file_format: str) -> Path:
    """Writes the documents to folder/corpus.<file_format> (txt: separated by blank lines) and returns the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"corpus.{file_format}"
    if file_format == "txt":
        path.write_text("\n\n".join(documents))
    elif file_format == "jsonl":
        path.write_text("".join(json.dumps({"id": i, "text": d}) + "\n" for i, d in enumerate(documents)))
    elif file_format == "parquet":
        datasets.Dataset.from_dict({"text": documents}).to_parquet(str(path))
    else:
        raise ValueError(file_format)
    return path
