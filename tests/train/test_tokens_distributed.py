"""data=tokens and data=text under 2 real gloo processes: each rank reads only its rows (train_rows), the run
gives the single-process losses on the same global batches, and data=text is prepared once, by rank 0."""
import pytest
from omegaconf import OmegaConf

from gdn.data.prepare import prepare
from gdn.train.main import run
from gdn.train.spawn import spawn_runs

STEPS = ["trainer.max_steps=6", "trainer.eval_every=6", "trainer.checkpoint_every=6", "trainer.log_every=2"]


@pytest.fixture(scope="module")
def token_dataset(tmp_path_factory):
    from tests.data.text_corpus import synthetic_documents, write_corpus

    tmp = tmp_path_factory.mktemp("tokens_dist")
    corpus = write_corpus(tmp / "corpus", synthetic_documents(), "parquet")
    prepare(str(corpus), tmp / "tokens", vocab_size=300, val_docs=20, shard_tokens=2000, progress=False)
    return tmp


def test_two_ranks_read_their_own_rows_and_give_the_single_process_losses(token_dataset, compose_config):
    cfg = compose_config("data=tokens", f"data.path={token_dataset / 'tokens'}", *STEPS)
    plain = OmegaConf.to_container(cfg, resolve=True)
    two = spawn_runs([(plain, token_dataset / "two")], world_size=2)[0]
    one = run(cfg, token_dataset / "one")
    assert len(two.losses) == len(one.losses) == 6
    for got, want in zip(two.losses, one.losses):
        assert abs(got - want) <= 1e-5 * abs(want), (two.losses, one.losses)
    assert two.tokens_seen == one.tokens_seen
    assert abs(two.eval_metrics["eval/loss"] - one.eval_metrics["eval/loss"]) <= 1e-5 * one.eval_metrics["eval/loss"]


def test_data_text_on_two_ranks_is_prepared_once_by_rank_0(token_dataset, compose_config, tmp_path):
    corpus = token_dataset / "corpus"
    cfg = compose_config("data=text", f"data.path={corpus}", "data.vocab_size=300", "data.val_docs=20",
                         f"data.cache_dir={tmp_path / 'cache'}", *STEPS)
    two = spawn_runs([(OmegaConf.to_container(cfg, resolve=True), tmp_path / "two")], world_size=2)[0]
    prepared = list((tmp_path / "cache").iterdir())
    assert len(prepared) == 1 and (prepared[0] / "manifest.json").is_file()
    one = run(cfg, tmp_path / "one")  # reads the same cache
    for got, want in zip(two.losses, one.losses, strict=True):
        assert abs(got - want) <= 1e-5 * abs(want), (two.losses, one.losses)
