"""conf/scale: every model at every scale, composed by Hydra and built on the meta device, is parameter-matched
within 3% of GDN at that scale; the Hydra-free reader (gdn.models.config_files) composes the same model node.
Each (model, scale) is composed and built once (cached): about 0.3 s a composition."""
from functools import cache

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from gdn.config import CONF_DIR, check_group_overrides, group_choices, missing_scale_size, register_resolvers
from gdn.models import LanguageModel
from gdn.models.config_files import model_config, model_kwargs

MODELS = group_choices(CONF_DIR, "model")
SCALES = group_choices(CONF_DIR, "scale")
PAPER_VOCAB = 32000
TOLERANCE = 0.03


@cache
def composed_model_node(model: str, scale: str | None, *overrides: str):
    register_resolvers()
    scale_override = [] if scale is None else [f"scale={scale}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"model={model}", "logging=none", *scale_override, *overrides])
    return cfg.model


def paper_vocab_node(model: str, scale: str | None):
    return composed_model_node(model, scale, f"data.vocab_size={PAPER_VOCAB}")


@cache
def parameter_counts(model: str, scale: str | None) -> tuple[int, int]:
    """(all parameters, parameters outside the embedding and LM head) at the paper's vocabulary, on meta."""
    with torch.device("meta"):
        built = instantiate(paper_vocab_node(model, scale), _convert_="all")
    embeddings = {id(built.embed.weight): built.embed.weight.numel(), id(built.lm_head.weight): built.lm_head.weight.numel()}
    return built.num_parameters(), built.num_parameters() - sum(embeddings.values())


def test_the_scales_and_every_model_have_sizes():
    assert {"tiny", "0.4b", "1.3b", "official_0.4b", "official_1.3b"} <= set(SCALES)
    for scale in SCALES:
        for model in MODELS:
            assert missing_scale_size({"scale": scale, "model": model}, CONF_DIR) is None, (scale, model)


@pytest.mark.parametrize("scale", SCALES)
def test_every_model_is_parameter_matched_to_gdn(scale):
    """Both the whole model at vocab 32000 and the blocks alone (vocabulary-independent) within 3% of GDN."""
    reference_total, reference_blocks = parameter_counts("gdn", scale)
    for model in MODELS:
        total, blocks = parameter_counts(model, scale)
        assert abs(total / reference_total - 1) <= TOLERANCE, (model, total, reference_total)
        assert abs(blocks / reference_blocks - 1) <= TOLERANCE, (model, blocks, reference_blocks)


@pytest.mark.parametrize("scale, expected_millions", [("0.4b", 425), ("1.3b", 1387), ("official_0.4b", 517),
                                                      ("official_1.3b", 1309)])
def test_the_named_scales_have_their_size(scale, expected_millions):
    """GDN at 0.4b / 1.3b (vocab 32000, untied) and the paper's GatedDeltaNet_0.4B / _1.3B (tied; the facts file
    says ~0.5B and ~1.31B)."""
    assert round(parameter_counts("gdn", scale)[0] / 1e6) == expected_millions


def test_the_official_configs_are_the_papers():
    gdn = paper_vocab_node("gdn", "official_1.3b")
    assert (gdn.n_layers, gdn.d_model, gdn.mlp_hidden, gdn.tie_embeddings) == (16, 2400, 5888, True)
    assert (gdn.mixers.gdn.num_heads, gdn.mixers.gdn.head_dim, gdn.mixers.gdn.expand_v) == (9, 200, 2)
    h1 = paper_vocab_node("gdn_h1", "official_1.3b")
    assert (h1.n_layers, h1.d_model, h1.mlp_hidden, list(h1.layers)) == (18, 2304, 6144, ["gdn", "swa"])
    assert (h1.mixers.gdn.head_dim, h1.mixers.swa.window, h1.mixers.swa.num_heads * 128) == (192, 2048, 2304)
    h1_small = paper_vocab_node("gdn_h1", "official_0.4b")
    assert (h1_small.n_layers, h1_small.d_model, h1_small.mixers.gdn.num_heads) == (12, 1536, 9)


def test_without_a_scale_the_model_configs_keep_their_sizes():
    """The default run (gdn-train, no scale) is the CPU MQAR model: d_model 64, 2 GDN blocks of 2 heads of 32."""
    gdn = paper_vocab_node("gdn", None)
    assert (gdn.d_model, gdn.n_layers, gdn.mixers.gdn.num_heads, gdn.mixers.gdn.head_dim) == (64, 2, 2, 32)


def test_a_scale_wins_over_an_experiments_model_sizes():
    node = composed_model_node("gdn", "tiny", "experiment=mqar_hard")  # mqar_hard sets model.d_model=128
    assert node.d_model == 64


@pytest.mark.parametrize("scale", [None, *SCALES])
def test_the_hydra_free_reader_composes_like_hydra(scale):
    for model in MODELS:
        hydra_node = OmegaConf.to_container(paper_vocab_node(model, scale), resolve=False)
        assert model_config(model, scale) == hydra_node, (model, scale)
        kwargs = model_kwargs(model, scale, vocab_size=PAPER_VOCAB)
        assert kwargs == {key: value for key, value in hydra_node.items() if key != "_target_"} | {
            "vocab_size": PAPER_VOCAB}
    with torch.device("meta"):  # and the kwargs build the model (one check is enough: the nodes are equal)
        assert LanguageModel(**model_kwargs("gdn_h2", scale)).num_parameters() == parameter_counts("gdn_h2", scale)[0]


def test_the_hydra_free_reader_names_a_missing_size(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "gdn.yaml").write_text("d_model: 64\n")
    with pytest.raises(ValueError, match="scale 'huge' has no size for model 'gdn'"):
        model_config("gdn", "huge", tmp_path)


def test_a_mistyped_scale_and_a_model_without_sizes_are_one_line_errors(tmp_path):
    assert check_group_overrides(["scale=huge"], CONF_DIR) == f"unknown scale 'huge'; choices: {', '.join(SCALES)}"
    (tmp_path / "scale" / "tiny").mkdir(parents=True)
    assert missing_scale_size({"scale": "tiny", "model": "gdn"}, tmp_path) == (
        "scale 'tiny' has no sizes for model 'gdn': write conf/scale/tiny/gdn.yaml")
    assert missing_scale_size({"scale": None, "model": "gdn"}, tmp_path) is None
