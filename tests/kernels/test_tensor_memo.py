"""TensorMemo: a value derived from a tensor is found again only for that tensor, unchanged, under an equal key."""
import gc

import torch

from gdn.kernels.tensor_memo import TensorMemo


class Builds:
    """A build function that counts its calls and returns a fresh object each time."""

    def __init__(self):
        self.count = 0

    def __call__(self):
        self.count += 1
        return object()


def test_the_same_tensor_and_key_find_the_value_again():
    memo, build, cu = TensorMemo(size=2), Builds(), torch.tensor([0, 5, 9])
    first = memo.get(cu, "a", build)
    assert memo.get(cu, "a", build) is first and build.count == 1
    assert memo.get(cu, "b", build) is not first  # another key
    assert memo.get(cu.clone(), "a", build) is not first  # equal values, another tensor
    assert build.count == 3


def test_an_in_place_change_misses():
    memo, build, cu = TensorMemo(size=2), Builds(), torch.tensor([0, 5, 9])
    first = memo.get(cu, None, build)
    cu[1] = 6
    assert memo.get(cu, None, build) is not first and build.count == 2


def test_a_freed_tensor_is_never_mistaken_for_a_new_one():
    """A new tensor may get the freed one's id (CPython reuses addresses): the weak reference tells them apart."""
    memo, build = TensorMemo(size=4), Builds()
    for _ in range(20):
        cu = torch.tensor([0, 5, 9])
        memo.get(cu, None, build)
        del cu
        gc.collect()
    assert build.count == 20
    assert len(memo.entries) == 1  # the freed tensors' entries were dropped when the next was kept


def test_at_most_size_entries_are_kept_newest_last():
    memo, build = TensorMemo(size=2), Builds()
    tensors = [torch.tensor([0, i]) for i in range(1, 4)]
    values = [memo.get(t, None, build) for t in tensors]
    assert len(memo.entries) == 2
    assert memo.get(tensors[2], None, build) is values[2] and memo.get(tensors[1], None, build) is values[1]
    assert memo.get(tensors[0], None, build) is not values[0]  # the oldest was evicted
    assert build.count == 4


def test_inference_tensors_are_built_and_not_kept():
    """They have no version counter (reading it raises), so an in-place change could not be seen."""
    memo, build = TensorMemo(size=2), Builds()
    with torch.inference_mode():
        cu = torch.tensor([0, 5, 9])
        assert memo.get(cu, None, build) is not memo.get(cu, None, build)
    assert build.count == 2 and memo.entries == []
