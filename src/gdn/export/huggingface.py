"""Write a run as a transformers folder: AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True).

    DIR/config.json             GDNConfig: the run's model config (gdn_model), vocab_size, auto_map to the code below
    DIR/generation_config.json  use_cache false (the modeling code keeps no cache)
    DIR/configuration_gdn.py    copies of gdn/export/configuration_gdn.py and modeling_gdn.py (the remote code,
    DIR/modeling_gdn.py           which imports the installed gdn package)
    DIR/model.safetensors       the weights, named model.<LanguageModel parameter name>
    DIR/tokenizer.json ...      text runs: the run's tokenizer as a PreTrainedTokenizerFast (MQAR runs have none)
    DIR/README.md               how to load it
"""
from __future__ import annotations

import shutil
from pathlib import Path

from omegaconf import OmegaConf
from safetensors.torch import save_file
from transformers import GenerationConfig, PreTrainedTokenizerFast

from gdn.data.tokenizer import END_OF_DOCUMENT
from gdn.eval.loading import LoadedRun, load_run
from gdn.export.configuration_gdn import GDNConfig

CODE_FILES = ("configuration_gdn.py", "modeling_gdn.py")
AUTO_MAP = {"AutoConfig": "configuration_gdn.GDNConfig", "AutoModelForCausalLM": "modeling_gdn.GDNForCausalLM"}
WEIGHTS_FILE = "model.safetensors"
CARD = """# {name}

A gdn model ({layers}, d_model {d_model}, {n_layers} layers, vocabulary {vocab}) exported by `gdn-export --hf`.
It needs the `gdn` package (`pip install gdn`): the modeling code here builds gdn's own LanguageModel.

```python
{imports}
model = AutoModelForCausalLM.from_pretrained("{name}", trust_remote_code=True)
{usage}
```

generate() recomputes the whole forward for each new token (no cache): correct, not fast.
"""
TEXT_USAGE = """tokenizer = AutoTokenizer.from_pretrained("{name}")
ids = tokenizer("The delta rule", return_tensors="pt").input_ids
print(tokenizer.decode(model.generate(ids, max_new_tokens=20, do_sample=False)[0]))"""
IDS_USAGE = """# no tokenizer: the run trained on token ids ({data})
print(model.generate(torch.tensor([[5, 40, 9, 51]]), max_new_tokens=4, do_sample=False))"""


def export_huggingface(run_path: str | Path, output_dir: str | Path) -> Path:
    """Write the run (a run folder, its checkpoints/, one checkpoint or a .safetensors export) to output_dir."""
    run = load_run(run_path)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in CODE_FILES:
        shutil.copyfile(Path(__file__).with_name(name), out / name)
    eos = _write_tokenizer(run, out)
    _write_config(run, out, eos)
    _write_weights(run, out / WEIGHTS_FILE)
    _write_card(run, out)
    return out


def _write_config(run: LoadedRun, out: Path, eos_token_id: int | None) -> None:
    model_config = OmegaConf.to_container(run.config.model, resolve=True)
    model_config.pop("vocab_size", None)  # from the weights (the data module may round it up)
    dtype = next(run.model.parameters()).dtype
    config = GDNConfig(gdn_model=model_config, vocab_size=run.model.embed.num_embeddings,
                       hidden_size=model_config["d_model"], num_hidden_layers=model_config["n_layers"],
                       eos_token_id=eos_token_id, pad_token_id=eos_token_id, use_cache=False,
                       architectures=["GDNForCausalLM"], auto_map=AUTO_MAP, dtype=str(dtype).removeprefix("torch."))
    config.save_pretrained(out)
    GenerationConfig(use_cache=False, eos_token_id=eos_token_id, pad_token_id=eos_token_id).save_pretrained(out)


def _write_weights(run: LoadedRun, path: Path) -> None:
    # clone: a tied head shares the embedding's storage, which safetensors refuses; both names are stored
    weights = {f"model.{name}": tensor.detach().clone().contiguous() for name, tensor in run.model.state_dict().items()}
    save_file(weights, str(path), metadata={"format": "pt", "checkpoint": str(run.checkpoint.path)})


def _write_tokenizer(run: LoadedRun, out: Path) -> int | None:
    """The end-of-document id for text runs (eos and pad of the exported config), None for runs without text."""
    if run.tokenizer is None:
        return None
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=run.tokenizer, eos_token=END_OF_DOCUMENT,
                                        pad_token=END_OF_DOCUMENT)
    tokenizer.save_pretrained(out)
    return tokenizer.eos_token_id


def _write_card(run: LoadedRun, out: Path) -> None:
    model = run.config.model
    fields = {"name": out.name, "layers": "+".join(model.layers), "d_model": model.d_model,
              "n_layers": model.n_layers, "vocab": run.model.embed.num_embeddings}
    if run.tokenizer is not None:
        imports = "from transformers import AutoModelForCausalLM, AutoTokenizer"
        card = CARD.format(**fields, imports=imports, usage=TEXT_USAGE.format(name=out.name))
    else:
        usage = IDS_USAGE.format(data=run.config.data._target_)
        card = CARD.format(**fields, imports="import torch\nfrom transformers import AutoModelForCausalLM", usage=usage)
    (out / "README.md").write_text(card)
