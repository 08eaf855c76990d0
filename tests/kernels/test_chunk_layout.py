"""chunk_layout: where every chunk of a varlen batch lies, its check of cu_seqlens, and its one host sync per
cu_seqlens tensor (the layers of a model share the layout of the first)."""
from unittest import mock

import pytest
import torch

from gdn.kernels.gated_delta import _common
from gdn.kernels.gated_delta._common import CHUNK, chunk_layout
from gdn.models import LanguageModel
from gdn.models.config_files import model_kwargs

CPU = torch.device("cpu")


def expected_chunks(bounds):
    """(sequence, chunk within it) of every chunk, and each sequence's first chunk, by counting."""
    index, offsets = [], [0]
    for n, (start, end) in enumerate(zip(bounds, bounds[1:])):
        index += [[n, c] for c in range(-(-(end - start) // CHUNK))]
        offsets.append(len(index))
    return index, offsets


@pytest.mark.parametrize("bounds", [[0, 1], [0, 64], [0, 65, 65, 200], [0, 0, 130, 131, 300], [0, 63, 127, 191]])
def test_chunks_of_every_sequence_in_order(bounds):
    layout = chunk_layout(1, bounds[-1], torch.tensor(bounds, dtype=torch.int32), CPU)
    index, offsets = expected_chunks(bounds)
    assert layout.chunk_index.tolist() == index and layout.chunk_offsets.tolist() == offsets
    assert (layout.num_seqs, layout.num_chunks) == (len(bounds) - 1, len(index))


@pytest.mark.parametrize("bounds", [[0, 50, 40, 100], [1, 100], [0, 99], [0]])
def test_bounds_that_do_not_rise_from_0_to_T_are_refused(bounds):
    with pytest.raises(ValueError, match="cu_seqlens must rise from 0 to T = 100"):
        chunk_layout(1, 100, torch.tensor(bounds, dtype=torch.int32), CPU)


def test_float_bounds_are_refused():
    with pytest.raises(ValueError, match="integer tensor"):
        chunk_layout(1, 100, torch.tensor([0.0, 100.0]), CPU)


def counted_host_copies():
    return mock.patch.object(_common, "checked_bounds", wraps=_common.checked_bounds)


def test_one_host_copy_per_cu_seqlens_tensor_while_it_is_unchanged():
    cu = torch.tensor([0, 70, 200], dtype=torch.int32)
    with counted_host_copies() as host_copy:
        first = chunk_layout(1, 200, cu, CPU)
        assert chunk_layout(1, 200, cu, CPU) is first and host_copy.call_count == 1
        assert chunk_layout(1, 200, cu.clone(), CPU).chunk_index.tolist() == first.chunk_index.tolist()
        assert host_copy.call_count == 2  # another tensor, even of the same values: built again
        cu[1] = 130  # in place: the version counter changes, so does the layout
        assert chunk_layout(1, 200, cu, CPU).chunk_index.tolist() == expected_chunks([0, 130, 200])[0]
        assert host_copy.call_count == 3
        with pytest.raises(ValueError, match="T = 300"):  # the same tensor for another length is checked again
            chunk_layout(1, 300, cu, CPU)
    with torch.inference_mode():
        frozen = torch.tensor([0, 70, 200], dtype=torch.int32)  # no version counter: never cached
        with counted_host_copies() as host_copy:
            chunk_layout(1, 200, frozen, CPU), chunk_layout(1, 200, frozen, CPU)
            assert host_copy.call_count == 2


def test_a_models_forward_and_backward_copy_cu_seqlens_to_the_host_once():
    # GDN-H2 at scale=tiny with the Triton kernels: a GDN and a Mamba2 (SSD) layer, each of whose forward and
    # backward builds a layout; before, each of those was a host sync of its own (and the GDN forward's check another)
    torch.manual_seed(0)
    config = model_kwargs("gdn_h2", "tiny")
    for mixer in ("gdn", "mamba2"):
        config["mixers"][mixer]["backend"] = "triton"
    model = LanguageModel(**config)
    tokens = torch.randint(config["vocab_size"], (1, 150))
    cu_seqlens = torch.tensor([0, 40, 150], dtype=torch.int32)
    with counted_host_copies() as host_copy:
        model(tokens, cu_seqlens=cu_seqlens).float().square().mean().backward()
    assert host_copy.call_count == 1
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("path", ["chunk", "recurrent"])
def test_both_entry_points_refuse_bounds_that_do_not_cover_the_tokens(path):
    from gdn.kernels import chunk_gated_delta_rule, recurrent_gated_delta_rule

    q, k, v = (torch.randn(1, 20, 2, 16) for _ in range(3))
    g, beta = -torch.rand(1, 20, 2), torch.rand(1, 20, 2)
    run = chunk_gated_delta_rule if path == "chunk" else recurrent_gated_delta_rule
    with pytest.raises(ValueError, match="cu_seqlens must rise from 0 to T = 20"):
        run(q, k, v, g, beta, cu_seqlens=torch.tensor([0, 12, 19], dtype=torch.int32))
