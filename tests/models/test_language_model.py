"""The LanguageModel: the pattern stack, packing, parameter counts, tying and initialisation."""
import math

import pytest
import torch
import torch.nn.functional as F

from gdn.models import LanguageModel
from gdn.models.attention import SlidingWindowAttention
from gdn.models.gated_deltanet import GatedDeltaNet

VOCAB, D_MODEL = 50, 16
MIXER_KWARGS = {
    "gdn": {"num_heads": 2, "head_dim": 4, "chunk_size": 4},
    "swa": {"num_heads": 2, "window": 3},
    "attn": {"num_heads": 4},
}


def make_model(layers=("gdn", "swa"), n_layers=2, **kwargs):
    torch.manual_seed(0)
    return LanguageModel(VOCAB, D_MODEL, n_layers, list(layers), MIXER_KWARGS, **kwargs).double()


def gdn_layer_parameters(d, heads, dk, dv, conv=4):
    return (
        2 * d * heads * dk + d * heads * dv  # q, k, v projections
        + conv * heads * (2 * dk + dv)  # q, k, v short convolutions
        + d * heads + heads  # b_proj with its bias
        + d * heads + 2 * heads  # a_proj, A_log, dt_bias
        + d * heads * dv + dv  # g_proj, the per-head output norm
        + heads * dv * d  # o_proj
    )


def test_pattern_repeats_to_n_layers():
    model = make_model(layers=["gdn", "swa"], n_layers=4)
    assert [type(block.mixer) for block in model.blocks] == [GatedDeltaNet, SlidingWindowAttention] * 2
    with pytest.raises(ValueError, match="multiple"):
        make_model(layers=["gdn", "swa"], n_layers=3)


def test_forward_shapes_and_gradients():
    model = make_model()
    logits = model(torch.randint(0, VOCAB, (2, 7)))
    assert logits.shape == (2, 7, VOCAB)
    F.cross_entropy(logits.flatten(0, 1), torch.randint(0, VOCAB, (14,))).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_packed_documents_equal_separate_runs():
    model = make_model(layers=["gdn", "swa", "attn"], n_layers=3)
    ids = torch.randint(0, VOCAB, (2, 8))  # documents [0, 5), [5, 11), [11, 16) of the flattened batch
    packed = model(ids, cu_seqlens=torch.tensor([0, 5, 11, 16], dtype=torch.int32)).flatten(0, 1)
    flat = ids.flatten()
    separate = torch.cat([model(flat[None, s:e])[0] for s, e in [(0, 5), (5, 11), (11, 16)]])
    torch.testing.assert_close(packed, separate)


def test_parameter_count():
    d, hidden = D_MODEL, 256  # default SwiGLU hidden: 256 * ceil(8/3 * 16 / 256)
    per_block = gdn_layer_parameters(d, heads=2, dk=4, dv=8) + 3 * d * hidden + 2 * d
    model = make_model(layers=["gdn"], n_layers=2)
    assert model.num_parameters() == 2 * per_block + 2 * VOCAB * d + d
    tied = make_model(layers=["gdn"], n_layers=2, tie_embeddings=True)
    assert tied.lm_head.weight is tied.embed.weight
    assert tied.num_parameters() == model.num_parameters() - VOCAB * d
    no_mlp = make_model(layers=["gdn"], n_layers=2, mlp=False)
    assert no_mlp.num_parameters() == model.num_parameters() - 2 * (3 * d * hidden + d)
    attn = make_model(layers=["attn"], n_layers=1, mlp_hidden=24)
    assert attn.num_parameters() == 4 * d * d + 3 * d * 24 + 2 * d + 2 * VOCAB * d + d


def test_official_gdn_400m_config_has_about_half_a_billion_parameters():
    with torch.device("meta"):
        model = LanguageModel(
            32000, 1536, 11, ["gdn"], {"gdn": {"num_heads": 9, "head_dim": 128}}, mlp_hidden=6144, tie_embeddings=True
        )
    assert 0.45e9 < model.num_parameters() < 0.55e9


def test_init():
    n_layers = 4
    model = LanguageModel(
        1000, 64, n_layers, ["gdn", "swa"], {"gdn": {"num_heads": 2, "head_dim": 16}, "swa": {"num_heads": 4}}
    )
    assert abs(model.embed.weight.std().item() - 0.02) < 2e-3
    assert abs(model.blocks[0].mixer.q_proj.weight.std().item() - 0.02) < 2e-3
    scaled = 0.02 / math.sqrt(2 * n_layers)
    for block in model.blocks:
        assert abs(block.mixer.o_proj.weight.std().item() - scaled) < 0.15 * scaled
        assert abs(block.mlp.down_proj.weight.std().item() - scaled) < 0.15 * scaled
        assert (block.mixer_norm.weight == 1).all() and (block.mlp_norm.weight == 1).all()
    gdn = model.blocks[0].mixer
    assert (gdn.b_proj.bias == 0).all() and (gdn.o_norm.weight == 1).all()
    with torch.no_grad():
        gdn.A_log.fill_(0.0)
    model.init_weights()  # re-applies the gate init after the generic one
    assert gdn.A_log.exp().max() > 1 and (gdn.A_log.exp() <= 16).all()
