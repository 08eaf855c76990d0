import pytest
import torch

from gdn.data import MQARData, query_accuracy
from gdn.data.batch import IGNORE_INDEX
from gdn.data.mqar import FILLER

SETTINGS = dict(vocab_size=64, seq_len=64, num_kv_pairs=8, batch_size=16, seed=3, num_eval_examples=40)


def make(**overrides) -> MQARData:
    return MQARData(**{**SETTINGS, **overrides})


def test_shapes_and_dtypes():
    batch = make().train_batch(0)
    assert batch.input_ids.shape == batch.labels.shape == (16, 64)
    assert batch.input_ids.dtype == batch.labels.dtype == torch.long
    assert batch.cu_seqlens is None
    assert batch.num_valid_tokens == 16 * 8  # one query per key


def test_train_batch_depends_only_on_seed_and_index():
    first, second = make(), make()
    assert torch.equal(first.train_batch(5).input_ids, second.train_batch(5).input_ids)
    assert torch.equal(first.train_batch(5).labels, second.train_batch(5).labels)
    assert not torch.equal(first.train_batch(5).input_ids, first.train_batch(6).input_ids)
    assert not torch.equal(first.train_batch(5).input_ids, make(seed=4).train_batch(5).input_ids)


def test_each_key_is_queried_once_with_the_value_that_followed_it():
    data = make()
    num_keys = (data.vocab_size - 1) // 2
    n = data.num_kv_pairs
    for index in range(3):
        batch = data.train_batch(index)
        for ids, labels in zip(batch.input_ids.tolist(), batch.labels.tolist()):
            keys, values = ids[0 : 2 * n : 2], ids[1 : 2 * n : 2]
            assert len(set(keys)) == n and len(set(values)) == n
            assert all(1 <= k <= num_keys for k in keys)
            assert all(num_keys < v < data.vocab_size for v in values)
            assert labels[: 2 * n] == [IGNORE_INDEX] * (2 * n)

            value_of = dict(zip(keys, values))
            queried = [p for p, label in enumerate(labels) if label != IGNORE_INDEX]
            assert sorted(ids[p] for p in queried) == sorted(keys)
            assert all(labels[p] == value_of[ids[p]] for p in queried)
            # everything after the context that is not a query is filler
            assert all(ids[p] == FILLER for p in range(2 * n, data.seq_len) if p not in queried)


def test_query_gaps_follow_the_power_law():
    """With power_a = 0.01 most queries come soon after the context; with power_a = 1 the gaps are uniform."""

    def early_fraction(power_a: float) -> float:
        data = make(seq_len=512, num_kv_pairs=4, batch_size=256, power_a=power_a)
        positions = (data.train_batch(0).labels != IGNORE_INDEX).nonzero()[:, 1]
        midpoint = 2 * data.num_kv_pairs + (data.seq_len - 2 * data.num_kv_pairs) / 2
        return (positions < midpoint).float().mean().item()

    assert early_fraction(0.01) > 0.75
    assert 0.4 < early_fraction(1.0) < 0.6


def test_eval_set_is_fixed_batched_and_from_its_own_stream():
    data = make()
    first, second = data.eval_batches(), data.eval_batches()
    assert [b.input_ids.shape[0] for b in first] == [16, 16, 8]
    for a, b in zip(first, second):
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)
    # the examples do not depend on the batch size, and are none of the training examples with the same indices
    regrouped = torch.cat([b.input_ids for b in make(batch_size=7).eval_batches()])
    assert torch.equal(regrouped, torch.cat([b.input_ids for b in first]))
    train = torch.cat([data.train_batch(i).input_ids for i in range(3)])
    assert not (train[:, None, :] == regrouped[None, :, :]).all(dim=-1).any()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(seq_len=31), "seq_len must be >= 4 * num_kv_pairs = 32"),
        (dict(vocab_size=16), "vocab_size must be >= 2 * num_kv_pairs + 1 = 17"),
        (dict(num_kv_pairs=0), "num_kv_pairs must be >= 1"),
        (dict(batch_size=0), "batch_size must be >= 1"),
        (dict(num_eval_examples=0), "num_eval_examples must be >= 1"),
        (dict(power_a=0.0), "power_a must be > 0"),
    ],
)
def test_bad_arguments_name_the_limit(overrides, message):
    with pytest.raises(ValueError, match=message.replace("*", r"\*").replace("+", r"\+")):
        make(**overrides)


def test_smallest_valid_settings_work():
    batch = make(vocab_size=17, seq_len=32).train_batch(0)
    assert batch.num_valid_tokens == 16 * 8


def test_query_accuracy_scores_only_labelled_positions():
    labels = torch.tensor([[IGNORE_INDEX, 2, IGNORE_INDEX, 3], [1, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]])
    predictions = torch.tensor([[0, 2, 4, 1], [1, 0, 0, 0]])  # right, wrong (3 -> 1), right
    logits = torch.nn.functional.one_hot(predictions, num_classes=5).float()
    assert query_accuracy(logits, labels) == (2, 3)


def test_training_mixture_draws_pair_counts_in_range_and_eval_stays_at_the_maximum():
    data = MQARData(vocab_size=64, seq_len=64, num_kv_pairs=8, batch_size=4, seed=0, num_eval_examples=8,
                    min_train_kv_pairs=2)
    counts = {int((data.train_batch(i).labels[0] != IGNORE_INDEX).sum()) for i in range(60)}
    assert counts == set(range(2, 9))
    assert all(int((b.labels != IGNORE_INDEX).sum(1).unique()) == 8 for b in data.eval_batches())
    assert torch.equal(data.train_batch(7).input_ids, data.train_batch(7).input_ids)


def test_training_mixture_bounds_are_checked():
    with pytest.raises(ValueError, match=r"min_train_kv_pairs must be in \[1, num_kv_pairs=8\]"):
        MQARData(vocab_size=64, seq_len=64, num_kv_pairs=8, batch_size=4, min_train_kv_pairs=9)
