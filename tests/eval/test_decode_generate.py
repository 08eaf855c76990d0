"""The model-level decode path (LanguageModel.decode) reproduces the full forward for every architecture of
conf/model, and generation on it matches arg-max / sampling over full forwards."""
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from gdn.config import CONF_DIR, group_choices, register_resolvers
from gdn.eval.generation import SamplingSettings, generate, next_token
from tests.models.decoding import decode_in_steps

VOCAB = 32


def build(model_name: str, dtype=torch.float64) -> torch.nn.Module:
    """The conf/model architecture at its config size, sliding windows shortened to 4 so decoding crosses them."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"model={model_name}"])
    if "swa" in cfg.model.mixers:
        cfg.model.mixers.swa.window = 4
    torch.manual_seed(0)
    model = instantiate(cfg.model, vocab_size=VOCAB, _convert_="all").to(dtype).eval()
    for p in model.parameters():  # larger than the init's 0.02 so that every layer moves the logits
        p.data.add_(0.05 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("model_name", group_choices(CONF_DIR, "model"))
def test_prompt_then_steps_equals_full_forward(model_name):
    model = build(model_name)
    ids = torch.randint(0, VOCAB, (2, 11), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(ids)
        decoded, _ = decode_in_steps(model.decode, ids, 5, model.init_states())
    torch.testing.assert_close(decoded, full, rtol=1e-9, atol=1e-11)


def greedy_by_full_forward(model, prompt: list[int], steps: int) -> list[int]:
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt):]


@pytest.mark.parametrize("model_name", ["gdn", "gdn_h2", "samba", "transformer"])
def test_greedy_generation_matches_argmax_of_full_forward(model_name):
    model = build(model_name)
    prompt = [3, 9, 1, 30, 7]
    got = generate(model, prompt, SamplingSettings(max_new_tokens=8))
    assert got == greedy_by_full_forward(model, prompt, 8)


def test_generation_stops_when_asked():
    model = build("gdn")
    got = generate(model, [1, 2, 3], SamplingSettings(max_new_tokens=20), stop=lambda new: len(new) == 3)
    assert len(got) == 3


def test_top_k_sampling_keeps_to_the_top_k_and_is_seeded():
    logits = torch.tensor([[0.0, 5.0, 4.0, -1.0, 3.0]])
    settings = SamplingSettings(temperature=1.0, top_k=2)
    draws = [int(next_token(logits, settings, torch.Generator().manual_seed(s))) for s in range(200)]
    assert set(draws) == {1, 2}
    # P(1) = e^5 / (e^5 + e^4) = 0.731; 200 draws put the share within 0.1 of it with overwhelming probability
    assert abs(draws.count(1) / 200 - 0.731) < 0.1
    again = [int(next_token(logits, settings, torch.Generator().manual_seed(s))) for s in range(200)]
    assert draws == again
    assert int(next_token(logits, SamplingSettings(temperature=1.0, top_k=1), None)) == 1  # top-1 is greedy


def test_sampled_generation_is_reproducible_with_a_seed():
    model = build("gdn", torch.float32)
    settings = SamplingSettings(max_new_tokens=10, temperature=1.5, top_k=10)
    first = generate(model, [4, 5], settings, torch.Generator().manual_seed(7))
    second = generate(model, [4, 5], settings, torch.Generator().manual_seed(7))
    assert first == second and len(first) == 10 and all(0 <= t < VOCAB for t in first)


def test_bad_sampling_settings_name_the_fix():
    with pytest.raises(ValueError, match="temperature"):
        SamplingSettings(temperature=-1)
    with pytest.raises(ValueError, match="top_k"):
        SamplingSettings(top_k=0)
    with pytest.raises(ValueError, match="prompt is empty"):
        generate(build("gdn"), [], SamplingSettings())
