"""The lm-eval adapter (`gdn`) on local tasks with a real tiny trained model: every loglikelihood, generation and
rolling loglikelihood that lm-eval records equals a direct computation with the model."""
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

lm_eval = pytest.importorskip("lm_eval")

from lm_eval.api.registry import get_model  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from gdn.eval import cli as eval_cli  # noqa: E402
from gdn.eval.lm_eval_adapter import GdnLM  # noqa: E402
from gdn.eval.loading import load_run  # noqa: E402
from gdn.train.tracking import resolve_tracking_uri  # noqa: E402

from lm_eval_tasks import CHOICE_DOCS, GENERATE_DOCS, ROLLING_DOCS, write_tasks  # noqa: E402

MAX_LENGTH = 128


@pytest.fixture(scope="module")
def task_folder(tmp_path_factory) -> Path:
    return write_tasks(tmp_path_factory.mktemp("lm_eval_tasks"))


@pytest.fixture(scope="module")
def evaluation(text_run, task_folder):
    return lm_eval.simple_evaluate(
        model="gdn", model_args=f"run_dir={text_run},max_length={MAX_LENGTH}",
        tasks=["gdn_local_choice", "gdn_local_generate", "gdn_local_rolling"],
        task_manager=TaskManager(include_path=str(task_folder), include_defaults=False), log_samples=True)


def continuation_logprob(model, tokenizer, context: str, continuation: str) -> tuple[float, bool]:
    """log p(continuation | context) by one full forward; tokens split as lm-eval splits them (encode the whole,
    the continuation is what follows the context's own encoding)."""
    context_ids = tokenizer.encode(context).ids
    whole = tokenizer.encode(context + continuation).ids
    target = torch.tensor(whole[len(context_ids):])
    with torch.no_grad():
        log_probs = F.log_softmax(model(torch.tensor([whole[:-1]]))[0], dim=-1)[len(context_ids) - 1 :]
    return float(log_probs.gather(-1, target[:, None]).sum()), bool((log_probs.argmax(-1) == target).all())


def test_gdn_is_registered():
    assert get_model("gdn") is GdnLM


def test_multiple_choice_loglikelihoods_and_accuracy(text_run, evaluation):
    run = load_run(text_run)
    samples = evaluation["samples"]["gdn_local_choice"]
    correct = 0
    for sample in samples:
        doc = CHOICE_DOCS[sample["doc_id"]]
        direct = [continuation_logprob(run.model, run.tokenizer, doc["question"], " " + c) for c in doc["choices"]]
        recorded = [resp[0] for resp in sample["resps"]]
        for (ll, greedy), (want_ll, want_greedy) in zip(recorded, direct, strict=True):
            assert ll == pytest.approx(want_ll, rel=1e-5, abs=1e-5) and greedy == want_greedy
        correct += max(range(len(direct)), key=lambda i: direct[i][0]) == doc["answer"]
    assert len(samples) == len(CHOICE_DOCS)
    assert evaluation["results"]["gdn_local_choice"]["acc,none"] == pytest.approx(correct / len(CHOICE_DOCS))


def test_generation_is_the_greedy_continuation_cut_at_the_stop_string(text_run, evaluation):
    run = load_run(text_run)
    for sample in evaluation["samples"]["gdn_local_generate"]:
        ids = run.tokenizer.encode(GENERATE_DOCS[sample["doc_id"]]["question"]).ids
        start = len(ids)
        with torch.no_grad():
            for _ in range(6):  # max_gen_toks
                ids.append(int(run.model(torch.tensor([ids]))[0, -1].argmax()))
                if "." in run.tokenizer.decode(ids[start:]):
                    break
        assert sample["resps"][0][0] == run.tokenizer.decode(ids[start:]).split(".")[0]


def test_rolling_loglikelihood_is_the_documents_log_probability(text_run, evaluation):
    run = load_run(text_run)
    eot = run.tokenizer.token_to_id("<|endoftext|>")
    for sample in evaluation["samples"]["gdn_local_rolling"]:
        ids = [eot] + run.tokenizer.encode(ROLLING_DOCS[sample["doc_id"]]["text"]).ids  # one window: < MAX_LENGTH
        with torch.no_grad():
            log_probs = F.log_softmax(run.model(torch.tensor([ids[:-1]]))[0], dim=-1)
        direct = float(log_probs.gather(-1, torch.tensor(ids[1:])[:, None]).sum())
        assert sample["resps"][0][0] == pytest.approx(direct, rel=1e-5)
    assert math.isfinite(evaluation["results"]["gdn_local_rolling"]["word_perplexity,none"])


def test_long_documents_are_scored_in_windows(text_run):
    """A document longer than max_length: the disjoint windows predict every token exactly once, so the total
    equals the sum of the per-window direct log probabilities."""
    run = load_run(text_run)
    lm = GdnLM(model=run.model, tokenizer=run.tokenizer, max_length=16)
    text = " ".join(d["text"] for d in ROLLING_DOCS * 3)
    tokens = run.tokenizer.encode(text).ids
    assert len(tokens) > 32
    request = type("Request", (), {"args": (text,)})()
    total = lm.loglikelihood_rolling([request])[0]
    eot = lm.eot_token_id
    expected, predicted = 0.0, 0
    with torch.no_grad():
        while predicted < len(tokens):
            end = min(predicted + 16, len(tokens))
            inputs = ([eot] + tokens)[max(0, end - 16) : end]  # the 16 tokens before each predicted one
            log_probs = F.log_softmax(run.model(torch.tensor([inputs]))[0], dim=-1)
            targets = tokens[predicted:end]
            expected += float(log_probs[-len(targets):].gather(-1, torch.tensor(targets)[:, None]).sum())
            predicted = end
    assert total == pytest.approx(expected, rel=1e-5)


def test_gdn_eval_runs_lm_eval_tasks_into_mlflow(text_run, task_folder, evaluation, capsys):
    eval_cli.main([str(text_run), "eval.perplexity.enabled=false", "eval.niah.enabled=false",
                   "eval.lm_eval_tasks=[gdn_local_choice]", f"eval.lm_eval.include_path={task_folder}",
                   "eval.lm_eval.builtin_tasks=false", f"eval.lm_eval.max_length={MAX_LENGTH}"])
    assert "lm_eval/gdn_local_choice/acc_none" in capsys.readouterr().out
    run = load_run(text_run)
    uri = resolve_tracking_uri(run.config.logging.tracking_uri, run.config.paths.output_root)
    logged = MlflowClient(uri).get_run(run.checkpoint.mlflow_run_id).data.metrics
    assert logged["lm_eval/gdn_local_choice/acc_none"] == evaluation["results"]["gdn_local_choice"]["acc,none"]


def test_mqar_runs_are_refused_with_the_reason(mqar_run):
    with pytest.raises(ValueError, match="not a text run"):
        GdnLM(run_dir=str(mqar_run))


@pytest.mark.slow
def test_gdn_lm_eval_command_line(text_run, task_folder, evaluation, tmp_path):
    """`gdn-lm-eval --model gdn ...` (lm-eval's own command line; about 20 s of it indexes lm-eval's tasks)."""
    import json
    import subprocess

    script = Path(sys.executable).parent / "gdn-lm-eval"
    subprocess.run([str(script), "--model", "gdn", "--model_args", f"run_dir={text_run},max_length={MAX_LENGTH}",
                    "--tasks", "gdn_local_choice", "--include_path", str(task_folder), "--device", "cpu",
                    "--output_path", str(tmp_path)], check=True, capture_output=True, timeout=600)
    (results_file,) = tmp_path.rglob("results_*.json")
    results = json.loads(results_file.read_text())["results"]["gdn_local_choice"]
    assert results["acc,none"] == evaluation["results"]["gdn_local_choice"]["acc,none"]
