"""Speculative decoding (a draft model, prompt lookup): same tokens as plain greedy decoding."""

from __future__ import annotations

import numpy as np
import pytest

from models import write_llama
from pyllama import Llama, PromptLookupDecoding
from pyllama.generation.draft_policy import DraftPolicy
from pyllama.generation.speculative import DraftModel, guess

BIAS = {t: -100.0 for t in range(3, 259)} | {2: -100.0}  # readable tokens, no EOS: long outputs
PROMPT = "the planets of the solar system and the world"


def run(llm: Llama, **kwargs) -> str:
    return llm(PROMPT, max_tokens=60, temperature=0, logit_bias=BIAS, **kwargs)["choices"][0]["text"]


@pytest.fixture(scope="module")
def plain(tiny_spm):
    with Llama(str(tiny_spm[0]), n_ctx=256) as llm:
        return run(llm)


def test_draft_model_that_agrees_is_accepted_and_exact(tiny_spm, plain):
    unbiased = dict(max_tokens=60, temperature=0)  # the draft guesses greedily without the bias
    with Llama(str(tiny_spm[0]), n_ctx=256) as llm:
        expected = llm(PROMPT, **unbiased)["choices"][0]["text"]
    with Llama(str(tiny_spm[0]), n_ctx=256, draft_model=str(tiny_spm[0])) as llm:
        assert llm(PROMPT, **unbiased)["choices"][0]["text"] == expected
        stats = llm.last_speculation
        assert stats.drafted > 0 and stats.acceptance_rate > 0.8
        assert run(llm) == plain  # with a bias the draft does not know, guesses fail but output holds


def test_draft_model_that_disagrees_still_gives_plain_output(tiny_spm, plain, tmp_path):
    other = tmp_path / "other.gguf"
    write_llama(other, "spm", seed=99)  # same vocab, different weights
    with Llama(str(tiny_spm[0]), n_ctx=256, draft_model=str(other)) as llm:
        assert run(llm) == plain
        assert llm.last_speculation.drafted > 0 and llm.last_speculation.acceptance_rate < 0.8


def test_prompt_lookup_decoding(tiny_spm, plain):
    with Llama(str(tiny_spm[0]), n_ctx=256, draft_model=PromptLookupDecoding(num_pred_tokens=5)) as llm:
        assert run(llm) == plain
    lookup = PromptLookupDecoding(max_ngram_size=2, num_pred_tokens=3)
    assert list(lookup(np.array([5, 6, 7, 8, 9, 5, 6]))) == [7, 8, 9]
    assert list(lookup(np.array([1, 2, 3]))) == []


def test_seeded_sampling_with_a_drafter_matches_plain(tiny_spm):
    kwargs = dict(max_tokens=40, temperature=0.8, seed=5, logit_bias=BIAS)
    with Llama(str(tiny_spm[0]), n_ctx=256) as llm:
        expected = llm(PROMPT, **kwargs)["choices"][0]["text"]
    with Llama(str(tiny_spm[0]), n_ctx=256, draft_model=str(tiny_spm[0])) as llm:
        assert llm(PROMPT, **kwargs)["choices"][0]["text"] == expected


def test_llama_cpp_python_style_drafter_callable(tiny_spm, plain):
    calls = []

    def drafter(input_ids: np.ndarray) -> np.ndarray:
        calls.append(len(input_ids))
        return np.array([300, 301], dtype=np.intc)

    with Llama(str(tiny_spm[0]), n_ctx=256, draft_model=drafter) as llm:
        assert run(llm) == plain
    assert calls
    with pytest.raises(TypeError):
        Llama(str(tiny_spm[0]), n_ctx=64, draft_model=3)


def test_the_policy_stops_guessing_what_never_pays_even_when_a_guess_is_always_at_hand():
    """A draft model always has a guess; the policy must still see plain decodes to know what
    guessing costs, and then stop guessing when guesses are never accepted."""
    policy = DraftPolicy()
    lengths = []
    for _ in range(60):
        k = policy.draft_length()
        lengths.append(k)
        policy.cost.observe(1 + k, 0.010 + 0.002 * k)  # a decode: fixed part + per token
        if k:
            policy.drafted(k, 0.008 * k)  # a draft model nearly as slow as the target
            policy.verified(k, 0)
    assert 0 in lengths[:4]  # a plain decode while learning the costs
    assert sum(1 for k in lengths[20:] if k) <= 3  # then only rare probes


def test_a_draft_model_guesses_no_more_than_will_be_checked(tiny_spm):
    draft = DraftModel(str(tiny_spm[0]), num_pred_tokens=8, n_ctx=128)
    try:
        ids = list(range(10, 30))
        assert len(guess(draft, ids, 3)) == 3
        assert len(draft._session.tokens) == len(ids) + 3 - 1  # it decoded only what it handed out
        assert guess(lambda input_ids: np.array([7, 8, 9, 10]), ids, 2) == [7, 8]  # a plain function too
    finally:
        draft.close()
