"""The high-level Llama API: llama-cpp-python's calls and result shapes, streaming, limits, reuse."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from models import reference_bert_embedding
from pyllama import ContextOverflowError, Llama
from pyllama.enums import AttentionType, PoolingType

BYTE_TOKENS = range(3, 259)  # <0x00>..<0xFF> in the tiny sentencepiece vocab
READABLE = {t: -100.0 for t in BYTE_TOKENS} | {2: -100.0}  # words and letters only, never EOS


@pytest.fixture(scope="module")
def llm(tiny_spm):
    with Llama(model_path=str(tiny_spm[0]), n_ctx=256, seed=1337, n_threads=2) as loaded:
        yield loaded


def greedy(llm: Llama, prompt, **kwargs):
    kwargs = {"temperature": 0, "logit_bias": READABLE, "max_tokens": 24} | kwargs
    return llm(prompt, **kwargs)


def test_seed_example_shape(llm):
    out = llm("Q: Name the planets in the solar system? A: ", max_tokens=32, stop=["Q:", "\n"], echo=True)
    assert out["id"].startswith("cmpl-") and out["object"] == "text_completion"
    assert isinstance(out["created"], int) and out["model"] == llm.model_path
    choice = out["choices"][0]
    assert choice["index"] == 0 and choice["logprobs"] is None and choice["finish_reason"] in ("stop", "length")
    assert choice["text"].startswith("Q: Name the planets in the solar system? A: ")
    assert "\n" not in choice["text"][len("Q: Name the planets"):]
    usage = out["usage"]
    assert usage["prompt_tokens"] == len(llm.tokenize(b"Q: Name the planets in the solar system? A: "))
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens"] <= 32


def test_stop_strings_across_token_boundaries(llm):
    full = greedy(llm, "hello world")["choices"][0]["text"]
    tokens = llm.tokenize(full, add_bos=False)
    pieces = [llm.detokenize([t]).decode() for t in tokens]
    boundary = len(pieces[0]) + len(pieces[1]) + len(pieces[2])
    stop = full[boundary - 1: boundary + 1]  # the last char of one token and the first of the next
    assert len(stop) == 2
    out = greedy(llm, "hello world", stop=[stop, "zzz-never"])
    assert out["choices"][0]["text"] == full[: full.index(stop)]
    assert out["choices"][0]["finish_reason"] == "stop"
    streamed = greedy(llm, "hello world", stop=stop, stream=True)
    assert "".join(c["choices"][0]["text"] for c in streamed) == full[: full.index(stop)]


def test_stream_matches_non_stream_for_the_same_seed(llm):
    plain = llm("the solar system", max_tokens=40, seed=42, temperature=0.9)["choices"][0]["text"]
    chunks = list(llm("the solar system", max_tokens=40, seed=42, temperature=0.9, stream=True))
    assert "".join(c["choices"][0]["text"] for c in chunks) == plain
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}


def test_utf8_split_across_byte_tokens_is_never_emitted_broken(llm):
    target = "你好世界👩‍👩‍👧"
    whole_chars = [t for t in range(llm.n_vocab()) if any(ch in llm.model.vocab.text(t) for ch in "你好世界")]
    bias = {t: -100.0 for t in whole_chars}  # only byte tokens can spell the text
    grammar = f'root ::= "{target}"'
    chunks = [c["choices"][0]["text"] for c in llm("hello", grammar=grammar, logit_bias=bias, max_tokens=64,
                                                   temperature=0, stream=True)]
    assert "".join(chunks) == target
    assert all("\ufffd" not in chunk for chunk in chunks)
    assert len([c for c in chunks if c]) > 1
    assert len(llm.tokenize(target, add_bos=False)) > len(target)  # it really took byte tokens


def test_closing_the_stream_stops_generation_at_once(llm):
    stream = greedy(llm, "the planets", max_tokens=200, stream=True)
    next(stream), next(stream)
    stream.close()
    assert llm.n_tokens < len(llm.tokenize(b"the planets")) + 10
    assert greedy(llm, "hello")["choices"][0]["text"]  # the lock was released


def test_keyboard_interrupt_leaves_the_object_usable(llm):
    expected = greedy(llm, "one day bob said")["choices"][0]["text"]
    with pytest.raises(KeyboardInterrupt):
        for i, _ in enumerate(greedy(llm, "one day bob said", max_tokens=100, stream=True)):
            if i == 3:
                raise KeyboardInterrupt
    assert greedy(llm, "one day bob said")["choices"][0]["text"] == expected


def test_prefix_reuse_evaluates_only_the_new_part(llm):
    first = "Q: what are the planets of the solar system? A:"
    llm.reset()
    greedy(llm, first, max_tokens=4)
    assert llm.last_prompt_evaluated == len(llm.tokenize(first.encode()))
    second = first + " the world is"
    greedy(llm, second, max_tokens=4)
    a, b = llm.tokenize(first.encode()), llm.tokenize(second.encode())
    common = next(i for i, (x, y) in enumerate(zip(a + [-1], b)) if x != y)
    assert llm.last_prompt_evaluated == len(b) - common < len(b)
    out_cached = greedy(llm, second)["choices"][0]["text"]
    llm.reset()
    assert greedy(llm, second)["choices"][0]["text"] == out_cached


def test_prompt_longer_than_the_context_names_both_numbers(llm):
    long_prompt = "the planets " * 300
    n = len(llm.tokenize(long_prompt.encode()))
    with pytest.raises(ContextOverflowError, match=f"{n} tokens.*{llm.n_ctx()}"):
        llm(long_prompt)
    assert greedy(llm, "hello")["choices"][0]["text"]


def test_generation_ends_with_length_at_the_end_of_the_context(llm):
    out = greedy(llm, "hello", max_tokens=10_000)
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["usage"]["total_tokens"] == llm.n_ctx()
    assert greedy(llm, "hello", max_tokens=None)["usage"]["total_tokens"] == llm.n_ctx()


def test_context_shift_keeps_going_past_n_ctx(tiny_spm):
    with Llama(str(tiny_spm[0]), n_ctx=256, context_shift_keep=4, n_threads=2) as shifting:
        out = greedy(shifting, "hello world", max_tokens=600)
        assert out["usage"]["completion_tokens"] == 600
        assert out["choices"][0]["finish_reason"] == "length"
        assert shifting.n_tokens <= 256


def test_logprobs(llm):
    out = greedy(llm, "hello", max_tokens=5, logprobs=3)
    logprobs = out["choices"][0]["logprobs"]
    assert len(logprobs["tokens"]) == 5 == len(logprobs["token_logprobs"]) == len(logprobs["top_logprobs"])
    assert all(lp <= 0 for lp in logprobs["token_logprobs"])
    assert "".join(logprobs["tokens"]) == out["choices"][0]["text"]
    assert logprobs["text_offset"][0] == 0 and all(1 <= len(top) <= 3 for top in logprobs["top_logprobs"])
    echoed = greedy(llm, "hello world", max_tokens=2, logprobs=1, echo=True)["choices"][0]["logprobs"]
    assert echoed["token_logprobs"][0] is None and len(echoed["tokens"]) == len(llm.tokenize(b"hello world")) + 2


def test_tokens_as_prompt_and_detokenize(llm):
    tokens = llm.tokenize(b"hello world")
    assert tokens[0] == llm.token_bos()
    assert llm.detokenize(tokens) == b" hello world"
    assert llm.detokenize(tokens[2:], prev_tokens=tokens[:2]) == b"hello world"  # [BOS, "▁"] came before
    assert greedy(llm, tokens)["choices"][0]["text"] == greedy(llm, "hello world")["choices"][0]["text"]
    with pytest.raises(ValueError):
        llm([10**6])


def test_bad_arguments_are_value_errors(llm):
    for bad in ({"top_p": 0}, {"top_p": 1.5}, {"top_k": -1}, {"repeat_penalty": 0}, {"mirostat_mode": 3}):
        with pytest.raises(ValueError):
            llm("hello", **bad)
    with pytest.raises(TypeError):
        llm("hello", not_an_argument=1)
    with pytest.raises(ValueError, match="fill-in-the-middle"):
        llm("def f(", suffix="return x")


def test_seeded_sampling_is_reproducible(llm):
    run = lambda seed: llm("hello", max_tokens=16, temperature=1.0, seed=seed)["choices"][0]["text"]  # noqa: E731
    assert run(7) == run(7) and run(7) != run(8)


def test_concurrent_calls_serialize(llm):
    prompts = ["hello world", "the solar system", "one day bob", "what are you"]
    expected = {p: greedy(llm, p)["choices"][0]["text"] for p in prompts}
    results, errors = {}, []

    def call(prompt: str) -> None:
        try:
            results[prompt] = greedy(llm, prompt)["choices"][0]["text"]
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(p,)) for p in prompts * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and results == expected


def test_save_and_load_state(llm):
    greedy(llm, "the solar system is", max_tokens=1)
    state = llm.save_state()
    after = greedy(llm, "the solar system is")["choices"][0]["text"]
    greedy(llm, "something else entirely")
    llm.load_state(state)
    assert llm.n_tokens == len(state.tokens)
    assert greedy(llm, "the solar system is")["choices"][0]["text"] == after
    assert llm.last_prompt_evaluated == 1


def test_timings(llm):
    greedy(llm, "hello world", max_tokens=8)
    perf = llm.timings()
    assert perf.eval_tokens > 0 and perf.prompt_tokens > 0


def test_lora_switched_per_call(tiny_spm, tmp_path):
    from models import write_lora

    weights = tiny_spm[1]
    path = tmp_path / "lora.gguf"
    write_lora(path, {"output.weight": weights["output.weight"].shape}, rank=4, alpha=64.0, seed=3)
    with Llama(str(tiny_spm[0]), n_ctx=128) as local:
        base = greedy(local, "hello world")["choices"][0]["text"]
        adapted = greedy(local, "hello world", loras={str(path): 1.0})["choices"][0]["text"]
        assert adapted != base
        assert greedy(local, "hello world")["choices"][0]["text"] == base
        assert greedy(local, "hello world", loras={str(path): 1.0})["choices"][0]["text"] == adapted


def test_embeddings(tiny_bert):
    path, weights = tiny_bert
    with Llama(str(path), embedding=True, n_ctx=128) as embedder:
        vector = embedder.embed("hello world, the cats sat")
        tokens = embedder.tokenize(b"hello world, the cats sat")
        expected = reference_bert_embedding(weights, tokens)
        np.testing.assert_allclose(vector, expected / np.linalg.norm(expected), atol=2e-3)
        assert abs(np.linalg.norm(vector) - 1) < 1e-5
        raw = embedder.embed("hello world, the cats sat", normalize=False)
        np.testing.assert_allclose(raw, expected, atol=2e-3)
        response = embedder.create_embedding(["a search query", "the dog sat"])
        assert response["object"] == "list" and len(response["data"]) == 2
        assert response["data"][1]["index"] == 1 and len(response["data"][0]["embedding"]) == 64
        assert response["usage"]["prompt_tokens"] == sum(len(embedder.tokenize(t.encode())) for t in
                                                         ["a search query", "the dog sat"])


def test_attention_type_reaches_the_context(tiny_spm):
    # llama-cpp-python's attention_type=: a decoder read with full attention embeds every token differently
    vectors = {}
    for attention in (None, AttentionType.CAUSAL, AttentionType.NON_CAUSAL):
        with Llama(str(tiny_spm[0]), embedding=True, pooling_type=PoolingType.MEAN, attention_type=attention,
                   n_ctx=64) as embedder:
            vectors[attention] = np.asarray(embedder.embed("hello world, the cats sat"))
    np.testing.assert_allclose(vectors[AttentionType.CAUSAL], vectors[None], atol=1e-6)
    assert not np.allclose(vectors[AttentionType.NON_CAUSAL], vectors[None], atol=1e-3)


def test_unknown_constructor_argument(tiny_spm):
    with pytest.raises(TypeError, match="bogus"):
        Llama(str(tiny_spm[0]), bogus=1)
    Llama(str(tiny_spm[0]), logits_all=True, n_ctx=64).close()  # llama-cpp-python argument, accepted


def test_from_pretrained_uses_the_local_hub_cache(tiny_spm, tmp_path):
    # an offline Hugging Face cache laid out the way huggingface_hub writes it
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--tiny--llama-gguf"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (snapshot / "tiny-q8_0.gguf").write_bytes(tiny_spm[0].read_bytes())
    (snapshot / "README.md").write_text("tiny")
    with Llama.from_pretrained("tiny/llama-gguf", "*q8_0.gguf", cache_dir=tmp_path, local_files_only=True,
                               n_ctx=64) as llm:
        assert llm.model_path.endswith("tiny-q8_0.gguf")
        assert greedy(llm, "hello", max_tokens=2)["choices"][0]["text"]
    with pytest.raises(ValueError, match="exactly one"):
        Llama.from_pretrained("tiny/llama-gguf", "*.nothing", cache_dir=tmp_path, local_files_only=True)


def test_flash_attention_is_off_by_default_unless_a_quantized_v_cache_needs_it(tmp_path):
    from models import Shape, write_llama
    from pyllama.enums import GGMLType
    from pyllama.llama import _flash_attn

    assert _flash_attn(None, None) is False and _flash_attn(None, GGMLType.F16) is False  # llama-cpp-python's
    assert _flash_attn(None, GGMLType.Q8_0) is None  # llama.cpp's auto: a quantized V cache needs it
    assert _flash_attn(True, None) is True
    path = tmp_path / "head-32.gguf"  # a q8_0 cache needs heads of a whole block (32)
    write_llama(path, shape=Shape(n_embd=64, n_head=2, n_head_kv=1))
    with Llama(str(path), n_ctx=64, type_k=GGMLType.Q8_0, type_v=GGMLType.Q8_0, verbose=False) as quantized:
        assert quantized("hello", max_tokens=2)["usage"]["completion_tokens"] == 2
