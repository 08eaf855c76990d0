import itertools
from pathlib import Path

import pytest
import torch

from text_corpus import write_corpus
from gdn.data import TextData, TokenData, prepare, sources
from gdn.data.batch import IGNORE_INDEX
from gdn.data.tokenizer import END_OF_DOCUMENT

SEQ_LEN = 64
VAL_DOCS = 40


def make(path, cache_dir, **overrides) -> TextData:
    settings = dict(vocab_size=300, seq_len=SEQ_LEN, batch_size=4, eval_sequences=8, val_docs=VAL_DOCS,
                    cache_dir=str(cache_dir))
    return TextData(str(path), **{**settings, **overrides})


@pytest.fixture(scope="session")
def data(corpus_folder, tmp_path_factory) -> TextData:
    return make(corpus_folder, tmp_path_factory.mktemp("cache"))


@pytest.mark.parametrize("file_format", ["txt", "jsonl", "parquet"])
def test_every_file_format_yields_the_documents_in_order(file_format, documents, tmp_path):
    path = write_corpus(tmp_path / "corpus", documents, file_format)
    for source in (path, path.parent):  # the file, and the folder holding it
        assert list(sources.stream_documents(str(source))) == documents


def test_a_folder_of_mixed_formats_loads_every_file(documents, tmp_path):
    write_corpus(tmp_path / "mixed", documents[:100], "txt")
    write_corpus(tmp_path / "mixed" / "more", documents[100:], "parquet")
    assert sorted(sources.stream_documents(str(tmp_path / "mixed"))) == sorted(documents)


def test_formats_pack_into_the_same_batches(documents, data, tmp_path):
    for file_format in ("txt", "parquet"):
        path = write_corpus(tmp_path / file_format, documents, file_format)
        other = make(path, tmp_path / "cache", tokenizer=str(data.tokenizer_path))
        assert torch.equal(other.train_batch(3).input_ids, data.train_batch(3).input_ids)
        assert torch.equal(other.eval_batches()[0].labels, data.eval_batches()[0].labels)


def test_trained_tokenizer_is_deterministic_and_saved(corpus_folder, data, tmp_path):
    again = make(corpus_folder, tmp_path / "other_cache")
    assert again.tokenizer.to_str() == data.tokenizer.to_str()
    assert again.tokenizer_path.parent.parent == tmp_path / "other_cache"
    assert again.tokenizer_path.read_text() == data.tokenizer_path.read_text()
    assert data.tokenizer.get_vocab_size() == 300
    assert data.tokenizer.token_to_id(END_OF_DOCUMENT) is not None


def test_a_tokenizer_json_path_is_used_and_vocab_size_rounded_up(corpus_folder, data, tmp_path):
    loaded = make(corpus_folder, tmp_path / "cache", tokenizer=str(data.tokenizer_path), vocab_size=100)
    assert loaded.tokenizer.to_str() == data.tokenizer.to_str()
    assert loaded.vocab_size == 320  # max(100, 300) rounded up to a multiple of 64
    assert make(corpus_folder, tmp_path / "cache", tokenizer=str(data.tokenizer_path), vocab_size=400).vocab_size == 448


def test_missing_path_says_what_was_expected(tmp_path):
    missing = tmp_path / "no_such_corpus"
    with pytest.raises(FileNotFoundError, match="does not exist") as error:
        make(missing, tmp_path / "cache")
    assert str(missing) in str(error.value)
    assert ".txt/.json/.jsonl/.parquet" in str(error.value) and "hub" in str(error.value)


def test_unreachable_hub_name_says_what_was_expected(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(sources.datasets, "load_dataset", offline)
    with pytest.raises(FileNotFoundError, match="'someone/corpus' does not exist: expected a file or folder"):
        make("someone/corpus", tmp_path / "cache")


@pytest.mark.parametrize("content", [None, "not json {"])
def test_unreadable_tokenizer_names_the_path(content, corpus_folder, tmp_path):
    bad = tmp_path / "tokenizer.json"
    if content is not None:
        bad.write_text(content)
    with pytest.raises(ValueError, match="Hugging Face tokenizers tokenizer.json") as error:
        make(corpus_folder, tmp_path / "cache", tokenizer=str(bad))
    assert str(bad) in str(error.value)


def test_cu_seqlens_mark_every_row_start_and_document_end(data, documents):
    eod = data.end_of_document
    whole_documents = 0
    for batch in [data.train_batch(i) for i in range(16)] + data.eval_batches():
        ids, cu = batch.input_ids.flatten().tolist(), batch.cu_seqlens
        assert cu.dtype == torch.int32 and cu[0] == 0 and cu[-1] == len(ids)
        assert (cu.diff() > 0).all()
        bounds = cu.tolist()
        assert set(range(0, len(ids), SEQ_LEN)) <= set(bounds)
        for start, end in zip(bounds[:-1], bounds[1:]):
            segment = ids[start:end]
            if len(segment) > 1 and set(segment) == {eod}:
                continue  # the padding after the last document
            assert eod not in segment[:-1]  # a segment never runs past an end of document
            if start % SEQ_LEN:
                assert ids[start - 1] == eod  # ... and starts only at a row start or after one
            whole = start % SEQ_LEN and end % SEQ_LEN
            piece = data.tokenizer.decode(segment[:-1] if segment[-1] == eod else segment)
            if whole:
                assert piece in documents
            else:  # cut by a row start or end
                assert any(piece in document for document in documents)
            whole_documents += bool(whole)
    assert whole_documents > 10


def test_no_label_crosses_a_document_boundary(data):
    eod = data.end_of_document
    for batch in [data.train_batch(i) for i in range(4)] + data.eval_batches():
        ids, labels = batch.input_ids.flatten().tolist(), batch.labels.flatten().tolist()
        starts = set(batch.cu_seqlens.tolist())
        for p, label in enumerate(labels):
            same_row = (p + 1) % SEQ_LEN != 0
            if ids[p] == eod or (same_row and p + 1 in starts):
                assert label == IGNORE_INDEX
            elif same_row:
                assert label == ids[p + 1]


def test_one_epoch_labels_every_training_token_once_and_eval_reads_the_held_out_documents(documents, data):
    train_rows = [tuple(row) for i in range(data.batches_per_epoch) for row in data.train_batch(i).input_ids.tolist()]
    eval_rows = [tuple(row.tolist()) for batch in data.eval_batches() for row in batch.input_ids]
    assert len(set(train_rows)) == len(train_rows) == data.batches_per_epoch * data.batch_size
    assert not set(train_rows) & set(eval_rows)

    data.tokenizer.encode_special_tokens = True  # a quoted marker is text, as when the corpus was tokenised
    lengths = [len(e.ids) + 1 for e in data.tokenizer.encode_batch(documents, add_special_tokens=False)]
    data.tokenizer.encode_special_tokens = False
    held_out, train = lengths[:VAL_DOCS], lengths[VAL_DOCS:]
    assert data.num_train_rows == (sum(train) - 1) // SEQ_LEN
    # every training position after the first is a label unless it starts a document (the EOD before it is no input
    # whose label crosses documents); rows not drawn in this epoch's whole batches are the only ones left out
    starts = set(itertools.accumulate(train[:-1]))
    labelled = sum(data.train_batch(i).num_valid_tokens for i in range(data.batches_per_epoch))
    drawn = data.batches_per_epoch * data.batch_size
    assert labelled <= drawn * SEQ_LEN and labelled >= drawn * SEQ_LEN - len(starts)
    assert len(eval_rows) == min(8, (sum(held_out) - 1) // SEQ_LEN)


def test_train_batches_are_deterministic_resumable_and_reshuffled_each_epoch(corpus_folder, data):
    resumed = make(corpus_folder, Path(data.tokenizer_path).parent.parent)
    index = data.batches_per_epoch + 2
    assert torch.equal(resumed.train_batch(index).input_ids, data.train_batch(index).input_ids)
    assert torch.equal(resumed.train_batch(index).cu_seqlens, data.train_batch(index).cu_seqlens)
    epoch_0 = torch.cat([data.train_batch(i).input_ids for i in range(3)])
    epoch_1 = torch.cat([data.train_batch(data.batches_per_epoch + i).input_ids for i in range(3)])
    assert not torch.equal(epoch_0, epoch_1)
    other_seed = make(corpus_folder, Path(data.tokenizer_path).parent.parent, seed=1)
    assert not torch.equal(other_seed.train_batch(0).input_ids, data.train_batch(0).input_ids)


def test_eval_batches_are_fixed(data):
    first, second = data.eval_batches(), data.eval_batches()
    assert [b.input_ids.shape[0] for b in first] == [4, 4]
    for a, b in zip(first, second):
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.cu_seqlens, b.cu_seqlens)


def test_second_run_reads_the_cache_at_any_seq_len(documents, tmp_path, monkeypatch):
    path = write_corpus(tmp_path / "corpus", documents, "jsonl")
    first = make(path, tmp_path / "cache")

    def fail(*args, **kwargs):
        raise AssertionError("the cached tokens should have been used")

    monkeypatch.setattr(sources, "stream_documents", fail)
    monkeypatch.setattr(prepare, "train_bpe_tokenizer", fail)
    second = make(path, tmp_path / "cache")
    assert torch.equal(second.train_batch(0).input_ids, first.train_batch(0).input_ids)
    make(path, tmp_path / "cache", seq_len=32)  # another seq_len reads the same tokens
    write_corpus(tmp_path / "corpus", documents[:-1], "jsonl")
    with pytest.raises(AssertionError, match="cached tokens"):  # an edited corpus is prepared again
        make(path, tmp_path / "cache")


def test_data_text_batches_equal_data_tokens_batches_of_the_same_preparation(corpus_folder, data, tmp_path):
    prepared = tmp_path / "prepared"
    prepare.prepare(str(corpus_folder), prepared, tokenizer=data.tokenizer_path, val_docs=VAL_DOCS, progress=False)
    tokens = TokenData(str(prepared), seq_len=SEQ_LEN, batch_size=4, eval_sequences=8)
    text_with_that_tokenizer = make(corpus_folder, tmp_path / "cache", tokenizer=str(data.tokenizer_path))
    for index in (0, 7, tokens.batches_per_epoch + 1):
        a, b = tokens.train_batch(index), text_with_that_tokenizer.train_batch(index)
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)
        assert torch.equal(a.cu_seqlens, b.cu_seqlens)
    long_rows = tokens.eval_batches(2 * SEQ_LEN)[0], text_with_that_tokenizer.eval_batches(2 * SEQ_LEN)[0]
    assert torch.equal(long_rows[0].labels, long_rows[1].labels)


def test_eval_rows_and_too_small_corpus(corpus_folder, data):
    cache = Path(data.tokenizer_path).parent.parent
    assert sum(len(b.input_ids) for b in make(corpus_folder, cache, eval_sequences=3).eval_batches()) == 3
    with pytest.raises(ValueError, match="fewer than one batch of 4096"):
        make(corpus_folder, cache, batch_size=4096)
    with pytest.raises(ValueError, match=r"eval_sequences must be a row count >= 1 or null"):
        make(corpus_folder, cache, eval_sequences=1.5)
    with pytest.raises(ValueError, match="all 300 documents .* went to the validation split: lower --val-docs"):
        make(corpus_folder, cache, val_docs=1000)
