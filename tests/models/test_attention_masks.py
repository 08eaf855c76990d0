"""The visible-key mask (gdn.models.attention_masks): the mask_mod against its definition written as loops, the
FlexAttention block mask against SDPA with the dense mask (FlexAttention's forward, uncompiled, runs on the CPU;
the compiled kernel and the backward are checked on the GPU in test_attention_gpu.py), and the block-mask cache."""
import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import flex_attention

from gdn.models.attention_masks import BlockMaskCache, dense_mask, visible_mask_mod
from gdn.models.documents import document_ids

# the uncompiled FlexAttention used here warns that it materialises the scores (fine at these sizes)
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

T = 200  # not a multiple of FlexAttention's 128-token blocks
CU_SEQLENS = torch.tensor([0, 37, 150, 151, 200], dtype=torch.int32)  # uneven documents, one of a single token


def by_definition(length, window, cu_seqlens):
    """allowed[q, kv]: kv <= q, q - kv < window, same document, one pair at a time."""
    bounds = cu_seqlens.tolist() if cu_seqlens is not None else [0, length]
    doc = [next(i for i in range(len(bounds) - 1) if bounds[i] <= t < bounds[i + 1]) for t in range(length)]
    allowed = torch.zeros(length, length, dtype=torch.bool)
    for q in range(length):
        for kv in range(length):
            allowed[q, kv] = kv <= q and (window is None or q - kv < window) and doc[q] == doc[kv]
    return allowed


CASES = [(48, None), (None, CU_SEQLENS), (16, CU_SEQLENS), (1, None), (T, None)]


@pytest.mark.parametrize("window, cu_seqlens", CASES)
def test_dense_mask_from_the_mask_mod_matches_the_definition(window, cu_seqlens):
    positions = torch.arange(T)
    documents = None if cu_seqlens is None else document_ids(cu_seqlens, T)
    assert torch.equal(dense_mask(positions, positions, window, documents), by_definition(T, window, cu_seqlens))


def test_window_convention_is_flash_attns():
    """(W-1, 0): a query sees itself and the W-1 tokens before it, W keys in all."""
    mask = dense_mask(torch.arange(10), torch.arange(10), window=4)
    assert mask.sum(-1).tolist() == [1, 2, 3, 4, 4, 4, 4, 4, 4, 4]
    assert mask[9].nonzero().flatten().tolist() == [6, 7, 8, 9]


@pytest.mark.parametrize("window, cu_seqlens", CASES)
def test_flex_attention_with_the_block_mask_equals_sdpa_with_the_dense_mask(window, cu_seqlens):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, T, 16, generator=gen) for _ in range(3))
    block_mask = BlockMaskCache().get(T, window, torch.device("cpu"), cu_seqlens)
    flex = flex_attention(q, k, v, block_mask=block_mask)
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=by_definition(T, window, cu_seqlens))
    torch.testing.assert_close(flex, reference, rtol=1e-5, atol=1e-5)


def test_the_block_mask_skips_blocks_outside_the_window():
    """T = 1024 in 8 blocks of 128, window 128: each query block touches itself and the one before (15 of 64)."""
    block_mask = BlockMaskCache().get(1024, 128, torch.device("cpu"))
    visited = block_mask.to_dense()[0, 0]  # [query blocks, key blocks]: 1 where the block is computed
    assert int(visited.sum()) == 8 + 7
    assert visited.diagonal().all() and visited.diagonal(-1).all()


def test_block_masks_are_cached_by_shape_window_and_cu_seqlens():
    cache = BlockMaskCache(size=2)
    cpu = torch.device("cpu")
    first = cache.get(T, 48, cpu)
    assert cache.get(T, 48, cpu) is first
    assert cache.get(T, 32, cpu) is not first
    cu_seqlens = CU_SEQLENS.clone()
    packed = cache.get(T, 48, cpu, cu_seqlens)
    assert cache.get(T, 48, cpu, cu_seqlens) is packed  # the same tensor: every layer of one forward pass
    assert cache.get(T, 48, cpu, CU_SEQLENS.clone()) is not packed  # another batch's tensor
    cu_seqlens[1] = 50  # changed in place: rebuilt
    assert cache.get(T, 48, cpu, cu_seqlens) is not packed
    assert len(cache.entries) == 2 and len(cache.packed.entries) == 2


def test_block_masks_of_inference_tensors_are_built():
    """Under inference mode (no version counters) a packed mask is built each time, not cached and not refused."""
    cache, cpu = BlockMaskCache(), torch.device("cpu")
    with torch.inference_mode():
        cu_seqlens = CU_SEQLENS.clone()
        masks = [cache.get(T, 48, cpu, cu_seqlens) for _ in range(2)]
    assert masks[0] is not masks[1] and torch.equal(masks[0].to_dense(), masks[1].to_dense())


def test_the_mask_mod_is_what_flex_attention_evaluates():
    """The mask_mod takes FlexAttention's (batch, head, q_idx, kv_idx) index tensors."""
    mask_mod = visible_mask_mod(3, document_ids(CU_SEQLENS, T))
    q_idx, kv_idx = torch.tensor([40, 40, 40, 36]), torch.tensor([38, 37, 36, 35])
    assert mask_mod(torch.tensor(0), torch.tensor(0), q_idx, kv_idx).tolist() == [True, False, False, True]


def test_an_unknown_attention_backend_is_named():
    from gdn.models.attention import SlidingWindowAttention

    with pytest.raises(ValueError, match=r"backend must be one of \('auto', 'flex', 'sdpa'\), got 'flash'"):
        SlidingWindowAttention(16, 2, window=8, backend="flash")
