"""The trainer's batch read-ahead: the same batches as reading them when asked, read in the background."""
import threading

import pytest
import torch

from gdn.data.batch import Batch
from gdn.train.prefetch import BatchPrefetcher


def batches_at(position: int) -> list[Batch]:
    ids = torch.arange(position * 8, position * 8 + 8).view(2, 4)
    return [Batch(ids, ids + 1, torch.tensor([0, 3, 8], dtype=torch.int32))]


def test_returns_the_batches_of_each_position_read_ahead_in_another_thread_when_asked():
    started = {}

    def read(position):
        started[position] = threading.current_thread().name
        return batches_at(position)

    reader = BatchPrefetcher(read, pin_memory=False)
    positions = [0, 1, 2, 7, 8, 3]  # a jump, as after a resume, and one back
    for position, following in zip(positions, positions[1:] + [4]):
        got = reader.get(position)
        reader.read_ahead(following)
        expected = batches_at(position)
        assert all(torch.equal(a, b) for a, b in zip((got[0].input_ids, got[0].labels, got[0].cu_seqlens),
                                                      (expected[0].input_ids, expected[0].labels,
                                                       expected[0].cu_seqlens)))
    reader.close()
    assert started[1].startswith("gdn-batches") and started[8].startswith("gdn-batches")  # read ahead
    assert not started[0].startswith("gdn-batches")  # nothing was ahead: read when asked


def test_an_error_surfaces_for_the_position_asked_for_only():
    def read(position):
        if position == 1:
            raise ValueError("bad shard")
        return batches_at(position)

    reader = BatchPrefetcher(read, pin_memory=False)
    reader.read_ahead(1)  # fails in the thread
    assert torch.equal(reader.get(5)[0].input_ids, batches_at(5)[0].input_ids)  # 1 was never asked for
    reader.read_ahead(1)
    with pytest.raises(ValueError, match="bad shard"):
        reader.get(1)
    reader.close()


def test_close_ends_the_thread_and_a_later_get_starts_again():
    reader = BatchPrefetcher(batches_at, pin_memory=False)
    reader.read_ahead(1)
    reader.close()
    assert not any(t.name.startswith("gdn-batches") for t in threading.enumerate())
    reader.read_ahead(1)
    assert torch.equal(reader.get(1)[0].input_ids, batches_at(1)[0].input_ids)
    reader.close()
