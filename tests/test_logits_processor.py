"""logits_processor and stopping_criteria (llama-cpp-python's protocol) run inside generation:
honoured in completion, chat and streaming, with speculative decoding too; and the
llama-cpp-python keywords Llama() accepts without using them."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from pyllama import IgnoredArgumentWarning, Llama, LogitsProcessorList, PromptLookupDecoding, StoppingCriteriaList

PROMPT = "hello world, the planets"


@pytest.fixture(scope="module")
def llm(tiny_spm):
    with Llama(model_path=str(tiny_spm[0]), n_ctx=256, seed=7, n_threads=2) as loaded:
        yield loaded


def sampled_ids(llm: Llama, **kwargs) -> list[int]:
    """The ids generated for PROMPT, read back through the criterion (which sees them all but the last)."""
    seen: list[np.ndarray] = []
    out = llm(PROMPT, stopping_criteria=lambda ids, logits: seen.append(ids.copy()) and False, **kwargs)
    n_prompt = out["usage"]["prompt_tokens"]
    return [int(t) for t in seen[-1][n_prompt:]]


def test_a_banned_token_is_never_sampled(llm):
    free = sampled_ids(llm, max_tokens=60, temperature=0.7, seed=3)
    banned = max(set(free), key=free.count)  # the token this run samples most: it would be sampled again

    def ban(ids, scores):
        scores[banned] = -np.inf
        return scores

    for seed in (3, 4):
        ids = sampled_ids(llm, max_tokens=60, temperature=0.7, seed=seed, logits_processor=LogitsProcessorList([ban]))
        assert len(ids) > 20 and banned not in ids


def test_the_processor_sees_the_ids_so_far_and_writable_logits(llm):
    calls: list[tuple[np.ndarray, int]] = []

    def look(ids, scores):
        assert scores.flags.writeable and scores.shape == (llm.n_vocab(),) and scores.dtype == np.float32
        calls.append((ids.copy(), int(np.argmax(scores))))
        return scores

    llm(PROMPT, max_tokens=5, temperature=0, logit_bias={2: -100.0}, logits_processor=look)
    prompt = llm.tokenize(PROMPT.encode())
    assert [len(ids) for ids, _ in calls] == [len(prompt) + i for i in range(5)]
    assert list(calls[0][0]) == prompt
    for (_, chosen), (next_ids, _) in zip(calls, calls[1:]):  # greedy: each step's best is the next id
        assert next_ids[-1] == chosen


def test_a_no_op_processor_changes_nothing(llm):
    plain = llm(PROMPT, max_tokens=16, temperature=0.8, seed=5)
    hooked = llm(PROMPT, max_tokens=16, temperature=0.8, seed=5, logits_processor=lambda ids, scores: scores)
    assert hooked["choices"][0]["text"] == plain["choices"][0]["text"]


def test_a_processor_shifts_the_distribution_the_sampler_sees(llm):
    target = llm.tokenize(b" world", add_bos=False)[-1]

    def force(ids, scores):  # a new array, not the one it was given
        forced = np.full_like(scores, -1e9)
        forced[target] = 0.0
        return forced

    ids = sampled_ids(llm, max_tokens=6, temperature=1.0, top_k=40, seed=1, logits_processor=force)
    assert ids and set(ids) == {target}


def test_a_stopping_criterion_stops_at_the_step_it_says(llm):
    n_prompt = len(llm.tokenize(PROMPT.encode()))
    for n in (1, 3, 6):
        out = llm(PROMPT, max_tokens=20, temperature=0, logit_bias={2: -100.0},
                  stopping_criteria=StoppingCriteriaList([lambda ids, logits, n=n: len(ids) >= n_prompt + n]))
        assert out["usage"]["completion_tokens"] == n
        assert out["choices"][0]["finish_reason"] == "stop"
        full = llm(PROMPT, max_tokens=n, temperature=0, logit_bias={2: -100.0})
        assert out["choices"][0]["text"] == full["choices"][0]["text"]


def test_streaming_honours_both(llm):
    n_prompt = len(llm.tokenize(PROMPT.encode()))
    calls = []

    def count(ids, scores):
        calls.append(len(ids))
        return scores

    chunks = list(llm(PROMPT, max_tokens=20, temperature=0, stream=True, logits_processor=count,
                      stopping_criteria=lambda ids, logits: len(ids) >= n_prompt + 4))
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert calls == [n_prompt + i for i in range(5)]  # the fifth token is drawn, then the criterion stops
    text = "".join(chunk["choices"][0]["text"] for chunk in chunks)
    assert text == llm(PROMPT, max_tokens=4, temperature=0)["choices"][0]["text"]


def test_chat_honours_both(llm):
    messages = [{"role": "user", "content": "hello"}]
    banned = llm.tokenize(b"a", add_bos=False)[-1]
    seen: list[np.ndarray] = []

    def ban(ids, scores):
        scores[banned] = -np.inf
        return scores

    out = llm.create_chat_completion(messages, max_tokens=30, temperature=1.0, seed=2, logits_processor=ban,
                                     stopping_criteria=lambda ids, logits: seen.append(ids.copy()) and False)
    n_prompt = out["usage"]["prompt_tokens"]
    assert banned not in seen[-1][n_prompt:]
    stopped = llm.create_chat_completion(messages, max_tokens=30, temperature=0, stream=True,
                                         stopping_criteria=lambda ids, logits: len(ids) >= n_prompt + 2)
    assert [c["choices"][0]["finish_reason"] for c in stopped][-1] == "stop"


def test_speculative_decoding_gives_the_processed_output(tiny_spm, llm):
    def no_letter_a(ids, scores):
        scores[llm.tokenize(b"a", add_bos=False)[-1]] = -np.inf
        return scores

    prompt = "the planets the planets the planets the"
    expected = llm(prompt, max_tokens=24, temperature=0, logits_processor=no_letter_a)["choices"][0]["text"]
    with Llama(str(tiny_spm[0]), n_ctx=256, draft_model=PromptLookupDecoding(num_pred_tokens=4)) as fast:
        got = fast(prompt, max_tokens=24, temperature=0, logits_processor=no_letter_a)["choices"][0]["text"]
    assert got == expected


def test_a_processor_returning_nothing_or_the_wrong_shape_is_an_error(llm):
    with pytest.raises(TypeError, match="returned None"):
        llm(PROMPT, max_tokens=2, logits_processor=lambda ids, scores: None)
    with pytest.raises(ValueError, match="shape"):
        llm(PROMPT, max_tokens=2, logits_processor=lambda ids, scores: scores[:10])


def test_llama_cpp_python_arguments_without_effect_warn_once_misspellings_raise(tiny_spm):
    path = str(tiny_spm[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # what LangChain always passes asks for nothing: no warning
        Llama(path, n_ctx=64, lora_base=None, n_parts=-1, f16_kv=True, logits_all=False, last_n_tokens_size=64,
              device=None).close()
    # f16_kv=False too: llama-cpp-python 0.3.36 drops it (its **kwargs), so its KV cache stays F16 as here
    with pytest.warns(IgnoredArgumentWarning, match="f16_kv, lora_base, n_parts") as caught:
        Llama(path, n_ctx=64, lora_base="base.gguf", n_parts=2, f16_kv=False).close()
    assert len(caught) == 1
    with pytest.raises(TypeError, match="n_ctxx"):
        Llama(path, n_ctxx=64)
    with pytest.raises(ValueError, match="tokenizer"):
        Llama(path, n_ctx=64, tokenizer=object())
    with pytest.raises(TypeError, match="chat_handler"):
        Llama(path, n_ctx=64, chat_handler=lambda **kwargs: None)
    with Llama(path, n_ctx=64) as llm:
        with pytest.warns(IgnoredArgumentWarning, match="tfs_z"):
            llm("hi", max_tokens=1, tfs_z=0.5)
        with pytest.raises(TypeError, match="temprature"):
            llm("hi", max_tokens=1, temprature=0.5)
