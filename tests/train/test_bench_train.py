"""benchmarks/bench_train.py runs without Hydra, so it reads the model configs itself: each must equal the Hydra
composition `model=NAME scale=SCALE`; its equality mode runs end to end in one process."""
import importlib.util
import json
import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout (benchmarks/ is not in the package)

spec = importlib.util.spec_from_file_location("bench_train", REPO_ROOT / "benchmarks" / "bench_train.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


@pytest.mark.parametrize("choice", [choice for choice in bench.MODEL_CHOICES if choice != "tiny"])
def test_the_benchmark_models_are_the_hydra_compositions(compose_config, choice):
    name, scale = choice.rsplit("-", 1)
    model = OmegaConf.to_container(compose_config(f"model={name}", f"scale={scale}", tiny=False).model, resolve=True)
    model.pop("_target_"), model.pop("vocab_size")
    assert model == bench.benchmark_model(choice)


def test_random_tokens_are_reproducible_next_token_batches():
    data = bench.RandomTokens(vocab_size=50, seq_len=16, batch_size=4)
    first, again = data.train_batch(3), data.train_batch(3)
    assert first.input_ids.equal(again.input_ids) and first.input_ids.shape == (4, 16)
    assert first.labels[:, :-1].equal(first.input_ids[:, 1:])
    assert not first.input_ids.equal(data.train_batch(4).input_ids)


def test_random_documents_cut_every_row_at_its_own_places():
    data = bench.RandomTokens(vocab_size=50, seq_len=16, batch_size=3, documents_per_row=4)
    bounds = data.train_batch(0).cu_seqlens.tolist()
    assert bounds == sorted(set(bounds)) and len(bounds) == 3 * 4 + 1
    assert {0, 16, 32, 48} <= set(bounds) and bounds == data.train_batch(0).cu_seqlens.tolist()


def test_equality_mode_saves_and_compares_losses(tmp_path: Path):
    args = type("Args", (), {"save": str(tmp_path / "eq.json"), "reference": None})()
    saved = bench.equality(args)
    # uniform random tokens over 256 ids: the cross-entropy stays at about ln 256 = 5.55
    assert len(saved["losses"]) == 10 and all(abs(loss - math.log(256)) < 0.1 for loss in saved["losses"])
    args.save, args.reference = None, str(tmp_path / "eq.json")
    compared = bench.equality(args)
    assert compared["max_relative_difference"] == 0.0 and json.loads((tmp_path / "eq.json").read_text())["gpus"] == 1


def test_throughput_mode_runs_the_trainer_step(capsys):
    bench.main(["single", "--model", "tiny", "--vocab", "256", "--batch", "2", "--seq-len", "64", "--warmup", "1",
                "--steps", "2", "--ac", "op"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["device"] == "cpu" and result["mfu"] is None and result["tokens_per_s"] > 0
    assert abs(result["last_loss"] - math.log(256)) < 0.2
