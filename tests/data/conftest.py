"""Session-wide fixtures for the data tests."""
from pathlib import Path

import pytest

from text_corpus import synthetic_documents, write_corpus


@pytest.fixture(scope="session")
def documents() -> list[str]:
    return synthetic_documents()


@pytest.fixture(scope="session")
def corpus_folder(tmp_path_factory, documents) -> Path:
    """A folder holding the corpus as a single jsonl file."""
    folder = tmp_path_factory.mktemp("corpus")
    write_corpus(folder, documents, "jsonl")
    return folder
