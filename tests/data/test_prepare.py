"""gdn-prepare-data: determinism across process counts, resume after an interruption, and every bad input."""
import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

from text_corpus import write_corpus
from gdn.data import TokenData, shards
from gdn.data.prepare import PrepareStopped, prepare
from gdn.data.prepare_cli import main as prepare_cli

SETTINGS = dict(vocab_size=300, val_docs=20, shard_tokens=1000, progress=False)


@pytest.fixture(scope="module")
def parquet_corpus(documents, tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("parquet"), documents, "parquet").parent


@pytest.fixture(scope="module")
def prepared(parquet_corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    prepare(str(parquet_corpus), out, **SETTINGS)
    return out


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_the_manifest_counts_every_document_and_token(prepared, documents):
    manifest = shards.read_manifest(prepared)
    assert manifest["num_documents"] == len(documents) and manifest["dtype"] == "uint16"
    assert manifest["splits"]["val"]["documents"] == 20
    assert len(manifest["shards"]) > 10 and all(r["tokens"] >= 1000 for r in manifest["shards"][1:-1]
                                                 if r["split"] == "train")
    assert manifest["num_tokens"] == sum(p.stat().st_size for p in prepared.glob("*.bin")) // 2
    assert manifest["tokenizer"]["sha256"] == shards.sha256_file(prepared / "tokenizer.json")
    assert not list(prepared.glob("*tmp*")) and not (prepared / "prepare.json").exists()


def test_two_processes_prepare_the_same_files_as_one(parquet_corpus, prepared, tmp_path):
    prepare(str(parquet_corpus), tmp_path, num_proc=2, **SETTINGS)
    assert files_of(tmp_path) == files_of(prepared)


def test_an_interrupted_preparation_resumes_to_the_same_files(parquet_corpus, prepared, tmp_path):
    with pytest.raises(PrepareStopped):
        prepare(str(parquet_corpus), tmp_path, stop_after_shards=5, **SETTINGS)
    assert not (tmp_path / "manifest.json").exists()  # never a manifest that claims missing data
    (tmp_path / "shard-00005.bin.tmp").write_bytes(b"half a shard")  # as a kill mid-shard leaves it
    prepare(str(parquet_corpus), tmp_path, **SETTINGS)
    assert files_of(tmp_path) == files_of(prepared)


def test_a_resume_writes_again_a_finished_shard_whose_file_was_lost(parquet_corpus, prepared, tmp_path):
    with pytest.raises(PrepareStopped):
        prepare(str(parquet_corpus), tmp_path, stop_after_shards=6, **SETTINGS)
    (tmp_path / "shard-00002.bin").unlink()
    (tmp_path / "shard-00004.bin").write_bytes(b"")
    prepare(str(parquet_corpus), tmp_path, **SETTINGS)
    assert files_of(tmp_path) == files_of(prepared)


def test_the_cli_prepares_and_verifies(parquet_corpus, prepared, tmp_path, capsys):
    prepare_cli([str(parquet_corpus), str(tmp_path), "--vocab-size", "300", "--val-docs", "20", "--shard-tokens",
                 "1000", "--no-progress", "--tokenizer", str(prepared / "tokenizer.json")])
    assert all((tmp_path / name).read_bytes() == content for name, content in files_of(prepared).items()
               if name.endswith(".bin"))
    prepare_cli(["--verify", str(tmp_path)])
    assert "every sha256 matches" in capsys.readouterr().out


def test_an_empty_source_is_an_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text(json.dumps({"text": "  "}) + "\n" + json.dumps({"text": ""}) + "\n")
    with pytest.raises(ValueError, match="holds no documents") as error:
        prepare(str(tmp_path / "empty.jsonl"), tmp_path / "out", tokenizer=None, **SETTINGS)
    assert "empty.jsonl" in str(error.value)


def test_a_source_of_empty_files_is_the_same_error(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.jsonl").write_text("")
    (tmp_path / "corpus" / "b.txt").write_text("")
    with pytest.raises(ValueError, match="holds no documents") as error:
        prepare(str(tmp_path / "corpus"), tmp_path / "out", tokenizer=None, **SETTINGS)
    assert "corpus" in str(error.value)


def test_a_missing_text_field_names_the_file_and_the_option(documents, tmp_path):
    path = write_corpus(tmp_path / "corpus", documents, "jsonl")
    with pytest.raises(ValueError, match="has no text field 'body'.*--text-field") as error:
        prepare(str(path), tmp_path / "out", text_field="body", **SETTINGS)
    assert str(path) in str(error.value) and "'id'" in str(error.value)


def test_a_vocabulary_too_big_for_uint16_is_an_error(parquet_corpus, tmp_path):
    vocab = {f"w{i}": i for i in range(70000)} | {"[UNK]": 70000}
    big = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    big.pre_tokenizer = pre_tokenizers.Whitespace()
    big.save(str(tmp_path / "big.json"))
    with pytest.raises(ValueError, match="big.json.s vocabulary of 70002 tokens does not fit uint16.*--dtype uint32"):
        prepare(str(parquet_corpus), tmp_path / "out", tokenizer=tmp_path / "big.json", dtype="uint16",
                **{**SETTINGS, "vocab_size": 0})
    manifest = prepare(str(parquet_corpus), tmp_path / "out32", tokenizer=tmp_path / "big.json",
                       **{**SETTINGS, "vocab_size": 0})
    assert manifest["dtype"] == "uint32"


def test_a_folder_prepared_with_other_settings_is_an_error(parquet_corpus, prepared):
    with pytest.raises(ValueError, match="other settings.*prepare into another folder"):
        prepare(str(parquet_corpus), prepared, **{**SETTINGS, "val_docs": 10})


def test_a_truncated_shard_is_an_error_at_open(prepared, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name, content in files_of(prepared).items():
        (copy / name).write_bytes(content)
    (copy / "shard-00003.bin").write_bytes((copy / "shard-00003.bin").read_bytes()[:-2])
    with pytest.raises(ValueError, match="shard-00003.bin holds .* bytes.*gdn-prepare-data"):
        TokenData(str(copy), seq_len=16, batch_size=2)
    (copy / "shard-00003.bin").unlink()
    with pytest.raises(FileNotFoundError, match="shard-00003.bin is missing"):
        TokenData(str(copy), seq_len=16, batch_size=2)


def test_a_corrupted_shard_is_found_by_verify(prepared, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name, content in files_of(prepared).items():
        (copy / name).write_bytes(content)
    corrupted = bytearray((copy / "shard-00004.bin").read_bytes())
    corrupted[10] ^= 0xFF
    (copy / "shard-00004.bin").write_bytes(bytes(corrupted))
    TokenData(str(copy), seq_len=16, batch_size=2)  # the size is right: found only by the full check
    with pytest.raises(ValueError, match="shard-00004.bin does not match its sha256"):
        TokenData(str(copy), seq_len=16, batch_size=2, verify=True)
    with pytest.raises(ValueError, match="shard-00004.bin does not match its sha256"):
        prepare_cli(["--verify", str(copy)])


def test_a_dataset_of_another_tokenizer_is_an_error(prepared, parquet_corpus, tmp_path):
    other = tmp_path / "other"
    prepare(str(parquet_corpus), other, **{**SETTINGS, "vocab_size": 280})
    with pytest.raises(ValueError, match="prepared with the tokenizer .*--tokenizer"):
        TokenData(str(prepared), tokenizer=other / "tokenizer.json", seq_len=16, batch_size=2)
    TokenData(str(prepared), tokenizer=prepared / "tokenizer.json", seq_len=16, batch_size=2)


def test_an_unprepared_folder_says_how_to_prepare_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="manifest.json does not exist.*gdn-prepare-data"):
        TokenData(str(tmp_path), seq_len=16, batch_size=2)


def test_a_killed_preparation_resumes_to_the_same_files(tmp_path):
    """A real SIGKILL of gdn-prepare-data mid-way (after its third shard), then the same command again."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from text_corpus import synthetic_documents

    corpus = write_corpus(tmp_path / "corpus", synthetic_documents(num_documents=20000, seed=1), "jsonl")
    command = [sys.executable, "-m", "gdn.data.prepare_cli", str(corpus), "--vocab-size", "300", "--val-docs", "20",
               "--shard-tokens", "20000", "--no-progress", "--tokenizer-sample-bytes", "100000"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([*command[:4], str(tmp_path / "once"), *command[4:]], check=True, env=env)
    process = subprocess.Popen([*command[:4], str(tmp_path / "killed"), *command[4:]], env=env)
    while not (tmp_path / "killed" / "shard-00002.json").exists():
        assert process.poll() is None, "the preparation ended before it could be killed"
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "killed" / "manifest.json").exists()
    subprocess.run([*command[:4], str(tmp_path / "killed"), *command[4:]], check=True, env=env)
    assert files_of(tmp_path / "killed") == files_of(tmp_path / "once")
