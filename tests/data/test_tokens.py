"""data=tokens: windows are direct slices of the token stream, the order is seeded and resumable, rank slices
partition the batch (data=text is the same reader: tests/data/test_text.py compares the two)."""
import numpy as np
import pytest
import torch

from gdn.data import TokenData
from gdn.data.batch import IGNORE_INDEX
from gdn.data.prepare import prepare
from gdn.data.tokenizer import load_tokenizer

VAL_DOCS = 20


@pytest.fixture(scope="module")
def prepared(corpus_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("tokens")
    prepare(str(corpus_folder), out, vocab_size=300, val_docs=VAL_DOCS, shard_tokens=700, progress=False)
    return out


def token_stream(documents, tokenizer_path):
    """The documents tokenised directly, each followed by the end-of-document id, and the documents' starts."""
    tokenizer = load_tokenizer(tokenizer_path)
    tokenizer.encode_special_tokens = True
    eod = tokenizer.token_to_id("<|endoftext|>")
    ids = [e.ids + [eod] for e in tokenizer.encode_batch(documents, add_special_tokens=False)]
    return np.concatenate([np.array(i) for i in ids]), np.cumsum([0] + [len(i) for i in ids])


@pytest.mark.parametrize("seq_len", [16, 64, 333])
def test_rows_are_slices_of_the_token_stream_with_their_document_boundaries(prepared, documents, seq_len):
    data = TokenData(str(prepared), seq_len=seq_len, batch_size=2)
    stream, starts = token_stream(documents[VAL_DOCS:], prepared / "tokenizer.json")
    assert data.num_train_rows == (len(stream) - 1) // seq_len
    for index in (0, 1, data.batches_per_epoch + 3):
        batch = data.train_batch(index)
        for b, row in enumerate(batch.input_ids.tolist()):
            r = next(r for r in range(data.num_train_rows) if stream[r * seq_len : (r + 1) * seq_len].tolist() == row)
            window = stream[r * seq_len : (r + 1) * seq_len + 1]
            inner = [s - r * seq_len for s in starts if r * seq_len < s <= (r + 1) * seq_len]
            want_labels = torch.tensor(window[1:])
            want_labels[[s - 1 for s in inner]] = IGNORE_INDEX
            assert torch.equal(batch.labels[b], want_labels)
            bounds = set(batch.cu_seqlens.tolist())
            assert {b * seq_len + s for s in inner if s < seq_len} | {b * seq_len, (b + 1) * seq_len} == \
                {x for x in bounds if b * seq_len <= x <= (b + 1) * seq_len}


def test_one_epoch_visits_every_row_once_and_the_next_reshuffles(prepared):
    data = TokenData(str(prepared), seq_len=32, batch_size=4)
    epoch = [tuple(r) for i in range(data.batches_per_epoch) for r in data.train_batch(i).input_ids.tolist()]
    assert len(set(epoch)) == len(epoch) == data.batches_per_epoch * 4
    again = TokenData(str(prepared), seq_len=32, batch_size=4)  # resume: the same batch from its index alone
    index = data.batches_per_epoch + 1
    assert torch.equal(again.train_batch(index).input_ids, data.train_batch(index).input_ids)
    assert not torch.equal(data.train_batch(index).input_ids, data.train_batch(1).input_ids)
    other_seed = TokenData(str(prepared), seq_len=32, batch_size=4, seed=1)
    assert not torch.equal(other_seed.train_batch(0).input_ids, data.train_batch(0).input_ids)


def test_rank_slices_are_disjoint_and_make_the_batch(prepared):
    data = TokenData(str(prepared), seq_len=32, batch_size=8)
    for index in (0, 5):
        whole = data.train_batch(index)
        parts = [data.train_rows(index, rank, 4) for rank in range(4)]
        assert torch.equal(torch.cat([p.input_ids for p in parts]), whole.input_ids)
        assert torch.equal(torch.cat([p.labels for p in parts]), whole.labels)
        shifted = [parts[0].cu_seqlens] + [p.cu_seqlens[1:] + k * 2 * 32 for k, p in enumerate(parts) if k]
        assert torch.equal(torch.cat(shifted), whole.cu_seqlens)
    with pytest.raises(ValueError, match="multiple of 3"):
        data.train_rows(0, 0, 3)


def test_validation_reads_the_held_out_documents_at_any_length(prepared, documents):
    data = TokenData(str(prepared), seq_len=32, batch_size=4)
    stream, _ = token_stream(documents[:VAL_DOCS], prepared / "tokenizer.json")
    for length in (32, 64):
        rows = torch.cat([b.input_ids for b in data.eval_batches(None if length == 32 else length)])
        assert len(rows) == (len(stream) - 1) // length
        assert rows.flatten().tolist() == stream[: len(rows) * length].tolist()
    assert len(torch.cat([b.input_ids for b in TokenData(str(prepared), seq_len=32, batch_size=4,
                                                         eval_sequences=3).eval_batches()])) == 3
