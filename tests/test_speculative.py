"""Speculative decoding (a draft model, prompt lookup): same tokens as plain greedy decoding."""

from __future__ import annotations

import numpy as np
import pytest

from models import write_llama
from pyllama import Llama, PromptLookupDecoding

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
