"""S-NIAH prompts: the needle at the requested depth, the prompt as long as the length allows, the scorer, and
the accuracy of the suite against an independent greedy decode by full forwards."""
import re

import pytest
import torch

from gdn.data.tokenizer import train_bpe_tokenizer
from gdn.eval.loading import load_run
from gdn.eval.niah import NOISE, essay_sentence, make_sample, niah_accuracy, sample_depths, score

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def count_tokens():
    import random

    rng = random.Random(0)
    tokenizer = train_bpe_tokenizer([[essay_sentence(rng) for _ in range(400)] + list(NOISE)], 500)
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


def haystack_sentences_before_needle(sample) -> tuple[int, int]:
    """(haystack sentences before the needle, haystack sentences in all): every sentence ends in one '.'."""
    before = sample.prompt[sample.haystack_start : sample.needle_start]
    body = sample.prompt[sample.haystack_start : sample.haystack_end]
    return before.count("."), body.count(".") - 1  # the needle sentence holds one '.'


@pytest.mark.parametrize("task", [1, 2, 3])
@pytest.mark.parametrize("depth", [0.0, 0.3, 0.5, 1.0])
def test_needle_sits_at_the_requested_depth(task, depth, count_tokens):
    sample = make_sample(task, 1000, depth, seed=0, index=0, count_tokens=count_tokens)
    before, total = haystack_sentences_before_needle(sample)
    assert total > 20
    assert before == round(depth * total)
    assert sample.prompt[sample.needle_start :].startswith("One of the special magic")
    assert sample.value in sample.prompt[sample.needle_start : sample.needle_start + 120]


@pytest.mark.parametrize("task", [1, 2, 3])
def test_prompt_is_the_longest_that_fits(task, count_tokens):
    length = 700
    sample = make_sample(task, length, 0.5, seed=3, index=1, count_tokens=count_tokens)
    used = count_tokens(sample.prompt)
    assert used <= length
    # one more haystack sentence would not fit: the slack is below the longest sentence's token count
    assert length - used < 30


def test_values_and_haystacks_per_task(count_tokens):
    one, two, three = (make_sample(t, 400, 0.5, seed=0, index=0, count_tokens=count_tokens) for t in (1, 2, 3))
    assert re.fullmatch(r"\d{7}", one.value) and re.fullmatch(r"\d{7}", two.value)
    assert UUID.fullmatch(three.value)
    noise_body = one.prompt[one.haystack_start : one.needle_start]
    assert set(s.strip() + "." for s in noise_body.split(".") if s.strip()) <= set(NOISE)
    assert "uuid" in three.prompt and "number" in two.prompt
    again = make_sample(2, 400, 0.5, seed=0, index=0, count_tokens=count_tokens)
    assert again == two  # fixed seed: the same prompt in any process
    assert make_sample(2, 400, 0.5, seed=0, index=1, count_tokens=count_tokens).value != two.value


def test_scorer_oracle_and_wrong_answers():
    assert score(" 4815162.", "4815162") == 1.0
    assert score(" 4815163.", "4815162") == 0.0
    assert score(" 3f0c8a2e-51d4-4b3a-9c1e-7d2f6a4b8c90", "3f0c8a2e-51d4-4b3a-9c1e-7d2f6a4b8c90") == 1.0
    assert score("", "4815162") == 0.0


def test_bad_settings_name_the_fix(count_tokens):
    with pytest.raises(ValueError, match="too short"):
        make_sample(2, 10, 0.5, seed=0, index=0, count_tokens=count_tokens)
    with pytest.raises(ValueError, match="choose from"):
        make_sample(4, 400, 0.5, seed=0, index=0, count_tokens=count_tokens)
    assert sample_depths(3) == [0.0, 0.5, 1.0]


def test_accuracy_matches_greedy_decoding_by_full_forwards(text_run):
    run = load_run(text_run)
    tokenizer, model = run.tokenizer, run.model
    metrics = niah_accuracy(model, tokenizer, tasks=[2], lengths=[512], num_samples=2, seed=0)
    assert list(metrics) == ["niah/s2_acc_len512"]

    def count(text):
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    hits = 0.0
    for index, depth in enumerate(sample_depths(2)):
        sample = make_sample(2, 512, depth, 0, index, count)
        ids = tokenizer.encode(sample.prompt, add_special_tokens=False).ids
        start = len(ids)
        with torch.no_grad():
            for _ in range(count(" " + sample.value) + 4):
                ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
        hits += score(tokenizer.decode(ids[start:]), sample.value)
    assert metrics["niah/s2_acc_len512"] == hits / 2
