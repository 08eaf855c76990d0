"""Multi-query associative recall (MQAR), the Zoology benchmark (Arora et al., 2023), generated on the fly.

One example of length T with n key-value pairs:

    k1 v1 k2 v2 ... kn vn | 0 0 k2 0 k1 0 0 0 ... kn 0 0
    context: 2n tokens    | queries: each key once, filler 0 elsewhere

Labels are IGNORE_INDEX everywhere except at each re-queried key, whose label is the value that followed that
key in the context: the model must emit the value right after seeing the key again. Token 0 is the filler;
keys are distinct tokens from [1, 1 + K), values distinct tokens from [1 + K, vocab_size), K = (vocab_size - 1) // 2.

Query placement follows Zoology's power law: the query region holds (T - 2n) // 2 slots of two tokens (a key
is always followed by a filler), and the slot index g, i.e. the gap after the context counted in slots, is drawn
without replacement with probability proportional to (g + 1) ** (power_a - 1). A small power_a puts most
queries soon after the context, with a heavy tail of long-range recalls.

Training may draw a mixture of difficulties, as Zoology trains on several (length, pairs) settings at once:
with `min_train_kv_pairs` set, each training batch takes its number of pairs uniformly from
[min_train_kv_pairs, num_kv_pairs] (seeded by the batch index); evaluation always uses num_kv_pairs.
"""
import torch

from gdn.data.batch import IGNORE_INDEX, Batch
from gdn.data.seeding import seeded_generator

FILLER = 0
_TRAIN_STREAM, _EVAL_STREAM = 0, 1


def split_vocabulary(vocab_size: int) -> tuple[int, int]:
    """(K keys, values): keys are tokens [1, 1 + K), values [1 + K, vocab_size), K = (vocab_size - 1) // 2."""
    num_keys = (vocab_size - 1) // 2
    return num_keys, vocab_size - 1 - num_keys


class MQARData:
    """Random-access MQAR batches: train_batch(index) depends only on (seed, index)."""

    def __init__(
        self,
        *,
        vocab_size: int,
        seq_len: int,
        num_kv_pairs: int,
        batch_size: int,
        seed: int = 0,
        num_eval_examples: int = 1000,
        power_a: float = 0.01,
        min_train_kv_pairs: int | None = None,
    ):
        _validate(vocab_size, seq_len, num_kv_pairs, batch_size, seed, num_eval_examples, power_a)
        if min_train_kv_pairs is not None and not 1 <= min_train_kv_pairs <= num_kv_pairs:
            raise ValueError(f"min_train_kv_pairs must be in [1, num_kv_pairs={num_kv_pairs}], got {min_train_kv_pairs}")
        self.vocab_size = vocab_size
        self.seq_len = seq_len
        self.num_kv_pairs = num_kv_pairs
        self.batch_size = batch_size
        self.seed = seed
        self.num_eval_examples = num_eval_examples
        self.power_a = power_a
        self.min_train_kv_pairs = min_train_kv_pairs
        self._num_keys, self._num_values = split_vocabulary(vocab_size)

    def train_batch(self, index: int) -> Batch:
        if index < 0:
            raise ValueError(f"batch index must be >= 0, got {index}")
        generator = seeded_generator(self.seed, _TRAIN_STREAM, index)
        num_pairs = self.num_kv_pairs
        if self.min_train_kv_pairs is not None:
            num_pairs = int(torch.randint(self.min_train_kv_pairs, self.num_kv_pairs + 1, (), generator=generator))
        return self._examples(self.batch_size, generator, num_pairs)

    def eval_batches(self) -> list[Batch]:
        """The same num_eval_examples examples on every call (their own seed stream), in batches of batch_size."""
        examples = self._examples(self.num_eval_examples, seeded_generator(self.seed, _EVAL_STREAM), self.num_kv_pairs)
        return [
            Batch(input_ids, labels)
            for input_ids, labels in zip(
                examples.input_ids.split(self.batch_size), examples.labels.split(self.batch_size)
            )
        ]

    def _examples(self, num_examples: int, generator: torch.Generator, n: int) -> Batch:
        keys = 1 + _distinct_draws(num_examples, self._num_keys, n, generator)
        values = 1 + self._num_keys + _distinct_draws(num_examples, self._num_values, n, generator)

        input_ids = torch.full((num_examples, self.seq_len), FILLER, dtype=torch.long)
        input_ids[:, 0 : 2 * n : 2] = keys
        input_ids[:, 1 : 2 * n : 2] = values

        # Key i is queried at slot slots[:, i]; multinomial's draw order is random, so is the query order.
        num_slots = (self.seq_len - 2 * n) // 2
        weights = (torch.arange(1, num_slots + 1, dtype=torch.float64) ** (self.power_a - 1)).expand(num_examples, -1)
        slots = torch.multinomial(weights, n, replacement=False, generator=generator)
        query_positions = 2 * n + 2 * slots
        input_ids.scatter_(1, query_positions, keys)
        labels = torch.full_like(input_ids, IGNORE_INDEX).scatter_(1, query_positions, values)
        return Batch(input_ids, labels)


def query_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """(num_correct, num_queries): argmax predictions scored only where labels != IGNORE_INDEX."""
    queried = labels != IGNORE_INDEX
    correct = (logits.argmax(dim=-1) == labels) & queried
    return int(correct.sum()), int(queried.sum())


def _distinct_draws(rows: int, pool: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """[rows, k] long: k distinct integers from [0, pool) per row, uniformly at random."""
    return torch.rand(rows, pool, generator=generator).argsort(dim=1)[:, :k]


def _validate(
    vocab_size: int, seq_len: int, num_kv_pairs: int, batch_size: int, seed: int, num_eval_examples: int, power_a: float
) -> None:
    if num_kv_pairs < 1:
        raise ValueError(f"num_kv_pairs must be >= 1, got {num_kv_pairs}")
    if seq_len < 4 * num_kv_pairs:
        raise ValueError(
            f"seq_len must be >= 4 * num_kv_pairs = {4 * num_kv_pairs}, got {seq_len}: the context takes "
            f"2 * num_kv_pairs tokens and each of the num_kv_pairs queries a slot of 2"
        )
    if vocab_size < 2 * num_kv_pairs + 1:
        raise ValueError(
            f"vocab_size must be >= 2 * num_kv_pairs + 1 = {2 * num_kv_pairs + 1}, got {vocab_size}: keys and "
            f"values each need num_kv_pairs distinct tokens, and token 0 is the filler"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if num_eval_examples < 1:
        raise ValueError(f"num_eval_examples must be >= 1, got {num_eval_examples}")
    if power_a <= 0:
        raise ValueError(f"power_a must be > 0, got {power_a}")
