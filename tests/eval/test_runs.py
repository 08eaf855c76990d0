"""Evaluation of real tiny runs: loading a run in every form, perplexity at 1x/2x against a direct computation
and the trainer's own eval loss, the MQAR grid against the trainer's accuracy, eval.at_end and gdn-eval into the
run's MLflow run, gdn-generate."""
import math

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from mlflow import MlflowClient

from gdn.eval import cli as eval_cli
from gdn.eval import generate_cli
from gdn.eval.generation import SamplingSettings, generate
from gdn.eval.loading import load_run
from gdn.run_folder import RESOLVED_CONFIG, TOKENIZER_FILE, locate
from gdn.eval.mqar_grid import mqar_grid
from gdn.eval.perplexity import length_extrapolation
from gdn.train.export import export_safetensors
from gdn.train.tracking import resolve_tracking_uri


def mlflow_metrics(run) -> dict[str, float]:
    uri = resolve_tracking_uri(run.config.logging.tracking_uri, run.config.paths.output_root)
    return MlflowClient(uri).get_run(run.checkpoint.mlflow_run_id).data.metrics


def test_run_folder_holds_config_and_tokenizer(text_run, mqar_run):
    assert (text_run / RESOLVED_CONFIG).is_file() and (text_run / TOKENIZER_FILE).is_file()
    assert (mqar_run / RESOLVED_CONFIG).is_file() and not (mqar_run / TOKENIZER_FILE).exists()


def test_every_form_of_the_path_loads_the_same_weights(text_run, tmp_path):
    base = load_run(text_run)
    step_dir = locate(text_run)[1]
    exported = export_safetensors(text_run / "checkpoints", tmp_path / "model.safetensors")
    for path in (text_run / "checkpoints", step_dir):
        other = load_run(path)
        assert other.run_dir == text_run and other.checkpoint.step == 6
        assert other.checkpoint.mlflow_run_id == base.checkpoint.mlflow_run_id is not None
        for (name, a), (_, b) in zip(base.model.state_dict().items(), other.model.state_dict().items()):
            assert torch.equal(a, b), name
    (tmp_path / RESOLVED_CONFIG).write_text((text_run / RESOLVED_CONFIG).read_text())
    (tmp_path / TOKENIZER_FILE).write_text((text_run / TOKENIZER_FILE).read_text())
    from_export = load_run(exported)
    assert all(torch.equal(a, b) for a, b in zip(base.model.parameters(), from_export.model.parameters()))
    assert from_export.tokenizer.get_vocab_size() == base.tokenizer.get_vocab_size()


def test_missing_paths_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="run folder"):
        load_run(tmp_path / "nowhere")
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        load_run(tmp_path)


def test_perplexity_is_exp_of_the_directly_computed_mean_loss(text_run):
    run = load_run(text_run)
    data = instantiate(run.config.data, _convert_="all")
    metrics = length_extrapolation(run.model, run.config.data, data, [1, 2], torch.device("cpu"))
    for factor, seq_len in (("1x", 32), ("2x", 64)):
        batches = data.eval_batches(seq_len=seq_len)
        assert all(b.input_ids.shape[1] == seq_len for b in batches)
        losses = []
        with torch.no_grad():
            for b in batches:
                logits = run.model(b.input_ids, cu_seqlens=b.cu_seqlens)
                losses.append(F.cross_entropy(logits.flatten(0, 1), b.labels.flatten(), reduction="none"))
        token_losses = torch.cat(losses)[torch.cat([b.labels.flatten() for b in batches]) != -100]
        assert metrics[f"val/tokens_{factor}"] == token_losses.numel()
        assert metrics[f"val/loss_{factor}"] == pytest.approx(float(token_losses.mean()), rel=1e-6)
        assert metrics[f"val/ppl_{factor}"] == pytest.approx(math.exp(metrics[f"val/loss_{factor}"]), rel=1e-12)
    # 1x is the trainer's own held-out set: the loaded checkpoint reproduces its final eval loss
    assert metrics["val/loss_1x"] == pytest.approx(mlflow_metrics(run)["eval/loss"], rel=1e-5)
    # the same held-out tokens at both lengths (rows of 64 lose at most a few document-start labels)
    assert abs(metrics["val/tokens_2x"] - metrics["val/tokens_1x"]) <= 6


def test_text_eval_batches_at_the_training_length_are_the_held_out_rows(text_run):
    data = instantiate(load_run(text_run).config.data, _convert_="all")
    for a, b in zip(data.eval_batches(), data.eval_batches(seq_len=data.seq_len), strict=True):
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)
        assert torch.equal(a.cu_seqlens, b.cu_seqlens)


def test_mqar_grid_at_the_training_setting_is_the_trainers_accuracy(mqar_run):
    run = load_run(mqar_run)
    grid = mqar_grid(run.model, vocab_size=64, kv_pairs=[4, 20], seq_lens=[32], num_examples=32, batch_size=8,
                     seed=run.config.data.seed, device=torch.device("cpu"))
    assert list(grid) == ["mqar/acc_kv4_len32"]  # 20 pairs do not fit in 32 tokens: left out
    assert grid["mqar/acc_kv4_len32"] == pytest.approx(mlflow_metrics(run)["eval/accuracy"], abs=1e-12)


def test_eval_at_end_logged_the_suite_into_the_training_run(mqar_run):
    metrics = mlflow_metrics(load_run(mqar_run))
    grid = {k for k in metrics if k.startswith("mqar/")}
    assert grid == {f"mqar/acc_kv{n}_len{t}" for n in (2, 4) for t in (32, 64)}
    assert metrics["val/ppl_1x"] == pytest.approx(math.exp(metrics["val/loss_1x"]))
    assert metrics["val/loss_1x"] == pytest.approx(metrics["eval/loss"], rel=1e-6)
    assert metrics["mqar/acc_kv4_len32"] == pytest.approx(metrics["eval/accuracy"])


def test_gdn_eval_prints_the_tables_and_logs_into_the_runs_mlflow_run(mqar_run, capsys):
    eval_cli.main([str(mqar_run), "eval.mqar.kv_pairs=[1,4]", "eval.mqar.seq_lens=[32]",
                   "eval.mqar.num_examples=16", "eval.perplexity.length_factors=[1]"])
    out = capsys.readouterr().out
    assert "MQAR accuracy" in out and "validation (held-out set)" in out
    assert "S-NIAH skipped: it needs a text tokenizer" in out
    run = load_run(mqar_run)
    assert run.checkpoint.mlflow_run_id in out
    metrics = mlflow_metrics(run)
    assert "mqar/acc_kv1_len32" in metrics  # only this call asked for 1 pair


def test_gdn_eval_without_a_run_says_how_to_call_it(capsys):
    with pytest.raises(SystemExit) as exit_info:
        eval_cli.main(["eval.niah.enabled=false"])
    assert exit_info.value.code == 2 and "usage: gdn-eval" in capsys.readouterr().err


def test_gdn_generate_text_and_token_ids(text_run, mqar_run, capsys):
    generate_cli.main([str(text_run), "prompt=The delta rule", "max_new_tokens=6"])
    out = capsys.readouterr().out
    run = load_run(text_run)
    expected = generate(run.model, run.tokenizer.encode("The delta rule").ids, SamplingSettings(max_new_tokens=6))
    assert f"The delta rule{run.tokenizer.decode(expected)}" in out

    generate_cli.main([str(mqar_run), "prompt_ids=[3,40,5,50,3]", "max_new_tokens=2", "temperature=1.0",
                       "top_k=5", "num_samples=2", "seed=4"])
    first = capsys.readouterr().out
    generate_cli.main([str(mqar_run), "prompt_ids=[3,40,5,50,3]", "max_new_tokens=2", "temperature=1.0",
                       "top_k=5", "num_samples=2", "seed=4"])
    assert capsys.readouterr().out == first and first.count("--- sample") == 2

    with pytest.raises(SystemExit):
        generate_cli.main([str(mqar_run), "prompt=text on a toy vocabulary"])
    assert "prompt_ids" in capsys.readouterr().err


def test_gdn_eval_on_a_text_run_reports_s_niah_per_length(text_run, capsys):
    eval_cli.main([str(text_run), "eval.niah.tasks=[1,3]", "eval.niah.lengths=[400,600]", "eval.niah.num_samples=1",
                   "eval.perplexity.length_factors=[2]", "eval.mlflow.enabled=false"])
    out = capsys.readouterr().out
    assert "S-NIAH-1" in out and "S-NIAH-3" in out and "MQAR grid skipped" in out
    header = next(line for line in out.splitlines() if line.strip().startswith("task"))
    assert header.split() == ["task", "400", "600"]


def test_gdn_eval_of_weights_without_an_mlflow_run_creates_one(mqar_run, tmp_path):
    """A .safetensors export carries no MLflow run id: the metrics go to a new run in eval.mlflow.experiment_name,
    tagged with the evaluated folder."""
    (tmp_path / RESOLVED_CONFIG).write_text((mqar_run / RESOLVED_CONFIG).read_text())
    weights = export_safetensors(mqar_run / "checkpoints", tmp_path / "model.safetensors")
    cfg = eval_cli.compose_eval_config([str(weights), "eval.mqar.kv_pairs=[4]", "eval.mqar.seq_lens=[32]",
                                        "eval.mqar.num_examples=32", "eval.perplexity.enabled=false",
                                        "eval.mlflow.experiment_name=eval-test"])
    result, run_id = eval_cli.evaluate_run(cfg.run, cfg.eval)
    run = load_run(weights)
    client = MlflowClient(resolve_tracking_uri(run.config.logging.tracking_uri, run.config.paths.output_root))
    logged = client.get_run(run_id)
    assert run_id != load_run(mqar_run).checkpoint.mlflow_run_id
    assert client.get_experiment(logged.info.experiment_id).name == "eval-test"
    assert logged.data.tags["run_dir"] == str(tmp_path) and logged.info.status == "FINISHED"
    assert logged.info.run_name == "eval " + "/".join(tmp_path.parts[-2:])
    trainer_accuracy = mlflow_metrics(load_run(mqar_run))["eval/accuracy"]
    assert logged.data.metrics == result.metrics == {"mqar/acc_kv4_len32": trainer_accuracy}


def test_gdn_eval_of_a_multirun_folder_evaluates_every_job(text_run, mqar_run, tmp_path, capsys):
    (tmp_path / "0").symlink_to(mqar_run)
    (tmp_path / "1").symlink_to(text_run)
    (tmp_path / "multirun.yaml").write_text("{}\n")
    eval_cli.main([str(tmp_path), "eval.mqar.kv_pairs=[4]", "eval.mqar.seq_lens=[32]", "eval.niah.enabled=false",
                   "eval.perplexity.length_factors=[1]", "eval.mlflow.enabled=false"])
    out = capsys.readouterr().out
    assert out.index(f"evaluation of {mqar_run}") < out.index(f"evaluation of {text_run}")
    assert out.count("validation (held-out set)") == 2 and out.count("MQAR accuracy") == 1
