"""Decoding on CUDA (the Triton kernels: chunked prefill with a state, then the recurrent / decode kernels one token
at a time) reproduces the full forward, for every mixer family; built without Hydra (the GPU image has none)."""
import pytest
import torch

from gdn.models import LanguageModel
from tests.models.decoding import decode_in_steps

pytestmark = pytest.mark.gpu

PATTERNS = {
    "gdn": (["gdn"], {"gdn": {"num_heads": 2, "head_dim": 64}}),
    "deltanet": (["gdn"], {"gdn": {"num_heads": 2, "head_dim": 64, "use_gate": False}}),
    "mamba2": (["mamba2"], {"mamba2": {"d_state": 64, "headdim": 32}}),
    "samba": (["mamba", "swa"], {"mamba": {}, "swa": {"num_heads": 2, "window": 32}}),
    "gdn_h2": (["mamba2", "gdn", "swa"], {"mamba2": {"d_state": 64, "headdim": 32},
                                          "gdn": {"num_heads": 2, "head_dim": 64},
                                          "swa": {"num_heads": 2, "window": 32}}),
    "transformer": (["attn"], {"attn": {"num_heads": 2}}),
}


@pytest.mark.parametrize("name", list(PATTERNS))
def test_prompt_then_steps_equals_full_forward_on_cuda(name):
    layers, mixers = PATTERNS[name]
    torch.manual_seed(0)
    model = LanguageModel(512, 128, 2 * len(layers), layers, mixers).cuda().eval()
    ids = torch.randint(0, 512, (2, 150), device="cuda")
    with torch.no_grad():
        full = model(ids)
        decoded, _ = decode_in_steps(model.decode, ids, 100, model.init_states())
    error = ((decoded - full).norm() / full.norm()).item()
    assert error < 2e-3, error  # fp32 weights; the Triton kernels keep states in fp32
    assert (decoded[:, -50:].argmax(-1) == full[:, -50:].argmax(-1)).float().mean() > 0.98
