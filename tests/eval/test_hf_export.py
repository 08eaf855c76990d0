"""`gdn-export RUN --hf DIR` writes a folder that transformers loads (AutoModelForCausalLM, trust_remote_code) with
our logits and gdn-generate's greedy tokens, for every architecture of conf/model; `gdn-export RUN FILE` writes
the weights as one safetensors file."""
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from gdn.config import CONF_DIR, group_choices
from gdn.eval.generate_cli import main as generate_main
from gdn.eval.generation import SamplingSettings, generate
from gdn.eval.loading import load_run
from gdn.export.cli import main as export_main
from gdn.train.main import run
from tests.eval.conftest import compose_train

VOCAB = 64
TWO_STEPS = ["logging=none", "trainer.max_steps=2", "trainer.checkpoint_every=2", "trainer.eval_every=2",
             f"data.vocab_size={VOCAB}", "data.seq_len=32", "data.num_kv_pairs=4", "data.batch_size=4",
             "data.num_eval_examples=8"]
# every architecture, and one with the LM head tied to the embedding (both names are exported)
VARIANTS = {name: [f"model={name}"] for name in group_choices(CONF_DIR, "model")}
VARIANTS["transformer_tied"] = ["model=transformer", "model.tie_embeddings=true"]
PROMPT = [5, 40, 9, 51, 3]
NEW_TOKENS = 8


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """tiny_runs(variant) -> the folder of a 2-step MQAR run of that variant (trained once per module)."""
    root = tmp_path_factory.mktemp("hf_export_runs")
    done: dict[str, Path] = {}

    def _run(variant: str) -> Path:
        if variant not in done:
            run(compose_train(root, *VARIANTS[variant], "scale=tiny", *TWO_STEPS), root / variant)
            done[variant] = root / variant
        return done[variant]

    return _run


def load_hf(folder: Path) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(str(folder), trust_remote_code=True, dtype=torch.float32).eval()


def gdn_generate_ids(run_dir: Path, capsys, *args: str) -> list[int]:
    """The ids that the gdn-generate command prints for a token-id prompt (greedy)."""
    capsys.readouterr()
    generate_main([str(run_dir), *args])
    return [int(token) for token in capsys.readouterr().out.split("--- sample 0 ---\n")[1].split()]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_exported_folder_loads_in_transformers_with_our_logits_and_greedy_tokens(tiny_runs, tmp_path, capsys,
                                                                                      variant):
    run_dir = tiny_runs(variant)
    export_main([str(run_dir), "--hf", str(tmp_path / "hf")])
    assert "no tokenizer" in capsys.readouterr().out  # MQAR: token ids, no text tokenizer
    assert not (tmp_path / "hf" / "tokenizer.json").exists()
    model = load_hf(tmp_path / "hf")
    loaded = load_run(run_dir)
    ours = loaded.model
    assert type(model).__name__ == "GDNForCausalLM" and model.dtype == torch.float32
    run_model_config = OmegaConf.to_container(loaded.config.model, resolve=True)
    assert model.config.gdn_model == {key: value for key, value in run_model_config.items() if key != "vocab_size"}

    ids = torch.randint(0, VOCAB, (2, 40), generator=torch.Generator().manual_seed(0))  # past a 32-token chunk
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ours(ids), atol=1e-5, rtol=1e-5)
        hf_new = model.generate(torch.tensor([PROMPT]), max_new_tokens=NEW_TOKENS, do_sample=False)[0, len(PROMPT):]
    ours_new = gdn_generate_ids(run_dir, capsys, f"prompt_ids={PROMPT}", f"max_new_tokens={NEW_TOKENS}")
    assert len(ours_new) == NEW_TOKENS
    assert hf_new.tolist() == ours_new


def test_a_text_run_exports_its_tokenizer_and_generates_gdn_generates_text(text_run, tmp_path, capsys):
    export_main([str(text_run), "--hf", str(tmp_path / "hf")])
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    model = load_hf(tmp_path / "hf")
    loaded = load_run(text_run)
    prompt = "The delta rule"
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    assert ids[0].tolist() == loaded.tokenizer.encode(prompt, add_special_tokens=False).ids
    assert model.config.eos_token_id == tokenizer.eos_token_id == loaded.tokenizer.token_to_id("<|endoftext|>")

    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, loaded.model(ids), atol=1e-5, rtol=1e-5)
        next_token_loss = torch.nn.functional.cross_entropy(loaded.model(ids)[0, :-1], ids[0, 1:])
        torch.testing.assert_close(model(ids, labels=ids).loss, next_token_loss, atol=1e-5, rtol=1e-5)
        hf_new = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False)[0, ids.shape[1]:].tolist()
    ours_new = generate(loaded.model, ids[0].tolist(), SamplingSettings(max_new_tokens=NEW_TOKENS))
    eos = tokenizer.eos_token_id
    assert hf_new == (ours_new[:ours_new.index(eos) + 1] if eos in ours_new else ours_new)  # HF stops at the eos
    capsys.readouterr()
    generate_main([str(text_run), f"prompt={prompt}", f"max_new_tokens={NEW_TOKENS}"])
    assert capsys.readouterr().out.split("--- sample 0 ---\n")[1].rstrip("\n") == prompt + tokenizer.decode(hf_new)


def test_the_folder_names_its_code_and_the_safetensors_mode_writes_the_run_weights(tiny_runs, tmp_path):
    run_dir = tiny_runs("gdn")
    export_main([str(run_dir), "--hf", str(tmp_path / "hf")])
    config = AutoConfig.from_pretrained(str(tmp_path / "hf"), trust_remote_code=True)
    assert config.auto_map == {"AutoConfig": "configuration_gdn.GDNConfig",
                               "AutoModelForCausalLM": "modeling_gdn.GDNForCausalLM"}
    assert {"configuration_gdn.py", "modeling_gdn.py", "model.safetensors", "README.md"} <= {
        path.name for path in (tmp_path / "hf").iterdir()}

    export_main([str(run_dir), str(tmp_path / "model.safetensors")])
    weights = load_file(str(tmp_path / "model.safetensors"))
    expected = load_run(run_dir).model.state_dict()
    assert set(weights) == set(expected)
    assert all(torch.equal(weights[name], expected[name]) for name in expected)


def test_gdn_export_wants_one_output(tiny_runs, tmp_path, capsys):
    run_dir = tiny_runs("gdn")
    for argv in ([str(run_dir)], [str(run_dir), "x.safetensors", "--hf", str(tmp_path / "hf")]):
        with pytest.raises(SystemExit) as exit_info:
            export_main(argv)
        assert exit_info.value.code == 2
        assert "either an OUTPUT .safetensors file or --hf DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        export_main([str(tmp_path / "missing"), "--hf", str(tmp_path / "hf")])
    assert "no run or checkpoint at" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_on_cuda_the_exported_model_runs_our_kernels_with_our_logits(tiny_runs, tmp_path, variant):
    run_dir = tiny_runs(variant)
    export_main([str(run_dir), "--hf", str(tmp_path / "hf")])
    model = load_hf(tmp_path / "hf").to("cuda")
    ours = load_run(run_dir, "cuda").model
    ids = torch.randint(0, VOCAB, (2, 64), generator=torch.Generator().manual_seed(0)).cuda()
    with torch.no_grad():  # the mixers' backend=auto picks the Triton kernels for CUDA tensors, in both models
        torch.testing.assert_close(model(ids).logits, ours(ids), atol=1e-5, rtol=1e-5)
