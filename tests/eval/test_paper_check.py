"""benchmarks/paper_check.py: its retrieval-text batches label exactly the needle's answer, the byte tokenizer
round-trips, and --smoke runs every architecture end to end on the CPU (a row and a JSON line per model) with the
packages the GPU image lacks (Hydra, OmegaConf, MLflow, datasets, tokenizers) made unimportable."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gdn.data.batch import IGNORE_INDEX
from gdn.data.byte_tokenizer import ByteTokenizer
from gdn.eval.niah import make_sample

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout (benchmarks/ is not in the package)

SCRIPT = REPO_ROOT / "benchmarks" / "paper_check.py"
ABSENT_ON_THE_GPU_IMAGE = ("hydra", "omegaconf", "mlflow", "datasets", "tokenizers")
# Runs the script as __main__ after a meta-path hook that refuses those packages (and their submodules).
RUN_WITHOUT_THEM = """
import runpy, sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {absent!r}:
            raise ImportError(f"{{name}} is not on the GPU image")
sys.meta_path.insert(0, Refuse())
sys.argv = [{script!r}, *sys.argv[1:]]
runpy.run_path({script!r}, run_name="__main__")
"""


def load_script():
    spec = importlib.util.spec_from_file_location("paper_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_byte_tokenizer_round_trips_and_rejects_ids_past_a_byte():
    tokenizer = ByteTokenizer()
    text = "The special magic number for amber-dune is: 1234567. Größe"
    ids = tokenizer.encode(text).ids
    assert ids[:3] == [84, 104, 101] and len(ids) == len(text.encode()) and tokenizer.decode(ids) == text
    with pytest.raises(ValueError, match="outside"):
        tokenizer.decode([65, 256])


def test_retrieval_batch_labels_only_the_answer_after_a_niah_prompt():
    paper_check = load_script()
    tokenizer = ByteTokenizer()
    inputs, labels = paper_check.retrieval_batch(3, 700, seed=5, step=2)
    assert inputs.shape == labels.shape == (3, 700)
    for row in range(3):
        labelled = (labels[row] != IGNORE_INDEX).nonzero().flatten()
        answer = tokenizer.decode(labels[row, labelled].tolist())
        assert answer[0] == " " and answer[-1] == "." and len(answer) == 9 and answer[1:-1].isdigit()
        # the byte before the first label ends the prompt "... mentioned in the provided text is"
        prompt = tokenizer.decode(inputs[row, : int(labelled[0]) + 1].tolist())
        assert prompt.endswith("mentioned in the provided text is")
        # the needle's value is stated in the haystack, and the inputs continue with the answer (teacher forcing)
        assert f"is: {answer[1:-1]}." in prompt
        end = int(labelled[-1]) + 2
        assert tokenizer.decode(inputs[row, int(labelled[0]) + 1 : end].tolist()) == answer
        assert int(inputs[row, end:].abs().sum()) == 0  # right padding
    # training prompts come from another seed stream than the evaluation prompts of the same seed
    eval_prompt = make_sample(2, 700, 0.5, 5, 0, lambda text: len(tokenizer.encode(text).ids)).prompt
    assert tokenizer.decode(inputs[0, : len(eval_prompt.encode())].tolist()) != eval_prompt


def test_training_budget_leaves_every_remaining_model_its_share_of_the_call():
    paper_check = load_script()
    assert paper_check.EVAL_RESERVE_S == 30
    assert paper_check.training_budget(75, 480, 0, 4) == 75  # 120 s a model: its own 75 s fits
    assert paper_check.training_budget(75, 480, 300, 2) == 60  # 90 s a model left, 30 of it for evaluation
    assert paper_check.training_budget(75, 480, 470, 1) == 1  # overrun: a token second, not a negative budget


def test_compile_shapes_leaves_the_weights_and_gradients_untouched():
    import torch

    from gdn.models import LanguageModel
    from gdn.models.config_files import model_kwargs

    paper_check = load_script()
    torch.manual_seed(0)
    model = LanguageModel(**model_kwargs("gdn_h1", "tiny", vocab_size=256))
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    paper_check.compile_shapes(model, [torch.randint(0, 256, (2, 48)), torch.randint(0, 256, (1, 96))],
                               torch.device("cpu"))
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
    assert all(parameter.grad is None for parameter in model.parameters())


def test_smoke_runs_every_architecture(tmp_path):
    out = tmp_path / "rows.jsonl"
    program = RUN_WITHOUT_THEM.format(absent=set(ABSENT_ON_THE_GPU_IMAGE), script=str(SCRIPT))
    result = subprocess.run([sys.executable, "-c", program, "--smoke", "--out", str(out)], capture_output=True,
                            text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    models = ["gdn", "gdn_h1", "gdn_h2", "mamba2", "samba", "transformer", "deltanet"]
    assert [row["model"] for row in rows] == models
    for row in rows:
        assert row["train_steps"] == row["planned_steps"] == 8 and row["stopped_by"] == "tokens"
        assert set(row["niah"]) == {"niah/s2_acc_len512", "niah/s2_acc_len1024"}
        assert set(row["mqar"]) == {"mqar/acc_kv4_len64", "mqar/acc_kv8_len64"}
        assert all(0 <= acc <= 1 for acc in [*row["niah"].values(), *row["mqar"].values()])
        assert row["loss_mqar"] > 0 and row["loss_niah"] > 0 and row["compile_s"] >= 0
    table_rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and " | tokens | " in line]
    assert [line.split(" | ")[0][2:] for line in table_rows] == models


def test_chance_plateau_is_ln_of_the_number_of_values():
    check = load_script().on_chance_plateau
    assert check(4.85, 256) and check(3.47, 64) and check(float("nan"), 64)  # ln 128, ln 32
    assert not check(2.2, 64) and not check(0.1, 256)


def run_row(model: str, lr: float, mqar: float, niah: float) -> dict:
    return {"model": model, "lr": lr, "params": 7.6e6, "train_tokens": 3e7, "train_s": 75.0, "stopped_by": "time",
            "loss_mqar": 1.0, "mqar_mean": mqar, "niah": {"niah/s2_acc_len1024": niah, "niah/s2_acc_len2048": niah}}


def test_summarize_shows_each_model_at_its_best_learning_rate(tmp_path):
    module = load_script()
    runs = [run_row("mamba2", 4e-4, 0.14, 0.0), run_row("gdn", 4e-4, 0.99, 0.5), run_row("mamba2", 2e-3, 0.62, 0.0),
            run_row("gdn", 1e-3, 0.93, 1.0), run_row("gdn", 2e-3, 0.99, 0.9)]  # gdn: MQAR tie, S-NIAH decides
    best = module.best_per_model(runs)
    assert [(row["model"], row["lr"]) for row in best] == [("gdn", 2e-3), ("mamba2", 2e-3)]
    files = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    files[0].write_text("".join(json.dumps(row) + "\n" for row in runs[:2]))
    files[1].write_text("".join(json.dumps(row) + "\n" for row in runs[2:]))
    best_table, every_table = module.summarize([str(f) for f in files], [1024, 2048]).split("Every run:")
    assert [line.split(" | ")[:2] for line in best_table.splitlines() if line.startswith("| ") and "0.0" in line] == [
        ["| gdn", "0.002"], ["| mamba2", "0.002"]]
    every = [line.split(" | ")[:2] for line in every_table.splitlines() if line.startswith("| ") and "0.0" in line]
    assert every == [["| gdn", "0.0004"], ["| gdn", "0.001"], ["| gdn", "0.002"], ["| mamba2", "0.0004"],
                     ["| mamba2", "0.002"]]
