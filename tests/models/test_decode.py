"""Decoding with a state (a prompt, then one token at a time) reproduces the full-sequence forward."""
import pytest
import torch

from gdn.models.mixers import build_mixer
from tests.models.decoding import decode_in_steps

D_MODEL = 16
CASES = [
    ("gdn", {"num_heads": 2, "head_dim": 4, "chunk_size": 4}),
    ("gdn", {"num_heads": 2, "head_dim": 4, "use_delta": False}),
    ("gdn", {"num_heads": 2, "head_dim": 4, "use_gate": False, "use_short_conv": False}),
    ("attn", {"num_heads": 2}),
    ("swa", {"num_heads": 2, "window": 3}),
    ("swa", {"num_heads": 2, "window": 1}),
]


@pytest.mark.parametrize("name, kwargs", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
@pytest.mark.parametrize("prompt", [0, 1, 5])
def test_prompt_then_tokens_equals_full_forward(name, kwargs, prompt):
    torch.manual_seed(0)
    layer = build_mixer(name, D_MODEL, **kwargs).double()
    x = torch.randn(2, 11, D_MODEL, dtype=torch.float64)
    full, _ = layer(x)
    decoded, _ = decode_in_steps(lambda chunk, s: layer(chunk, state=s), x, prompt, layer.init_state())
    torch.testing.assert_close(decoded, full, rtol=1e-10, atol=1e-12)


def test_sliding_window_cache_keeps_only_the_window():
    layer = build_mixer("swa", D_MODEL, num_heads=2, window=3).double()
    _, state = layer(torch.randn(1, 7, D_MODEL, dtype=torch.float64), state=layer.init_state())
    assert state.key.shape[2] == 2 and state.seen == 7


def test_state_and_packing_do_not_mix():
    layer = build_mixer("gdn", D_MODEL, num_heads=2, head_dim=4)
    with pytest.raises(ValueError, match="decode"):
        layer(torch.randn(1, 4, D_MODEL), cu_seqlens=torch.tensor([0, 4], dtype=torch.int32), state=layer.init_state())
