"""The one generation core: the same text from Llama and the server's engine, penalty windows,
the engine's KV policy, and a Model shared by threads."""

from __future__ import annotations

import queue
import threading

import numpy as np
import pytest

from pyllama import Batch, ClosedError, Context, Llama, Model
from pyllama.generation.generator import Event, Request
from pyllama.generation.params import SamplingParams
from pyllama.server.engine import Engine
from pyllama.server.job import Job

READABLE = {t: -100.0 for t in range(3, 259)} | {2: -100.0}  # words and letters only, no EOS


def run_job(engine: Engine, request: Request, max_tokens: int, seed: int = 0) -> list[Event]:
    events: queue.Queue[Event] = queue.Queue()
    engine.submit(Job(request, max_tokens, seed, events.put))
    received = []
    while not received or received[-1].finish_reason is None:
        received.append(events.get(timeout=60))
    return received


def test_llama_and_the_engine_generate_the_same_text(tiny_spm):
    prompt = "Q: what is the solar system? A:"
    with Llama(str(tiny_spm[0]), n_ctx=512, n_threads=2) as llm:
        expected = llm(prompt, max_tokens=40, temperature=0, logit_bias=READABLE, stop=["Q:"])
        tokens = llm.tokenize(prompt, special=True)
    with Model(tiny_spm[0]) as model:
        engine = Engine(model, n_ctx=512, n_parallel=2, n_threads=2)
        try:
            params = SamplingParams(temperature=0, logit_bias=READABLE)
            events = run_job(engine, Request(tokens, params, None, ["Q:"]), max_tokens=40)
        finally:
            engine.close()
    assert "".join(e.text for e in events) == expected["choices"][0]["text"]
    assert events[-1].finish_reason == expected["choices"][0]["finish_reason"]
    assert events[-1].usage == expected["usage"]


def test_penalty_window_zero_is_off_and_minus_one_is_the_whole_context(model):
    """The penalties see the last penalty_last_n prompt tokens: 0 none, -1 all of them."""
    prompt = model.tokenize("the planets of the solar system are")
    with Context(model, n_ctx=512) as ctx:
        ctx.decode(Batch.of(prompt))
        favourite = SamplingParams(temperature=0).sampler(model, 0).sample(ctx)
        history = [favourite] + [model.tokenize("hello", add_special=False)[0]] * 200  # favourite far back

        def choice(last_n: int) -> int:
            params = SamplingParams(temperature=0, repeat_penalty=1e6, penalty_last_n=last_n)
            return params.sampler(model, 0, history=history, n_ctx=512).sample(ctx)

        assert choice(0) == favourite  # no window: nothing penalized
        assert choice(64) == favourite  # it is further back than 64 tokens
        assert choice(-1) != favourite  # the whole context: it is penalized
        assert choice(201) != favourite


def test_the_engine_drops_idle_caches_before_ending_a_request(tiny_spm):
    with Model(tiny_spm[0]) as model:
        engine = Engine(model, n_ctx=256, n_parallel=2, n_batch=256, n_threads=2)
        try:
            params = SamplingParams(temperature=0, logit_bias=READABLE)
            first = model.tokenize("hello world " * 30)[:100]
            run_job(engine, Request(first, params), max_tokens=4)
            cached = [slot for slot in engine.slots if slot.tokens]
            assert len(cached) == 1 and len(cached[0].tokens) > 90  # an idle slot keeps its prefix
            second = model.tokenize("the planets of the solar system " * 25)[:200]  # does not fit beside it
            assert len(first) + len(second) > 256
            events = run_job(engine, Request(second, params), max_tokens=8)
            assert events[-1].usage["completion_tokens"] == 8  # it ran to its own limit
            assert cached[0].tokens == []  # the idle prefix made room
        finally:
            engine.close()


def test_a_model_shared_by_threads_gives_single_thread_results(tiny_spm):
    """Vocab calls release the GIL; a shared scratch buffer once made threads read each
    other's pieces."""
    texts = [f"{w} 你好 world {i}" for i, w in enumerate(["the", "planets", "solar", "bob", "day", "hello"] * 10)]
    with Model(tiny_spm[0]) as model:
        expected = {t: model.tokenize(t) for t in texts}
        pieces = {t: [model.token_to_piece(x) for x in ids] for t, ids in expected.items()}
        wrong: list[str] = []

        def worker() -> None:
            for _ in range(50):
                for text in texts:
                    ids = model.tokenize(text)
                    if ids != expected[text] or [model.token_to_piece(x) for x in ids] != pieces[text] \
                            or model.detokenize(ids) != model.detokenize(expected[text]):
                        wrong.append(text)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert wrong == []


def test_closing_a_model_while_threads_use_its_vocab_never_crashes(tiny_spm):
    model = Model(tiny_spm[0])
    vocab = model.vocab
    outcomes: list[str] = []

    def worker() -> None:
        try:
            for _ in range(20000):
                vocab.tokenize("the planets of the solar system")
                vocab.token_to_piece(300)
            outcomes.append("finished")
        except ClosedError:
            outcomes.append("closed")

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    model.close()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 3 and set(outcomes) <= {"finished", "closed"}
    with pytest.raises(ClosedError):
        vocab.tokenize("hello")


def test_vocab_checks_token_ids(model):
    for method in (model.vocab.is_eog, model.vocab.is_control, model.vocab.text, model.vocab.token_to_piece):
        with pytest.raises(IndexError, match="outside the vocabulary"):
            method(model.vocab.n_tokens)
        with pytest.raises(IndexError):
            method(-1)


def resident_mib(pid: int) -> float:
    status = open(f"/proc/{pid}/status").read()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) / 1024


def test_the_server_loads_its_model_once(models_dir):
    """--embedding adds a context on the same weights, not another copy of them (without mmap the
    weights are in the process's own memory, so a second load would show)."""
    import json
    import urllib.request

    from models import Shape, write_llama
    from server_process import running_server

    path = models_dir / "70mb.gguf"
    if not path.exists():
        write_llama(path, "spm", Shape(n_embd=256, n_head=4, n_head_kv=4, n_layer=2, n_ff=512, n_vocab_extra=31_600))
    weights_mib = path.stat().st_size / 2**20
    sizes = {}
    for embedding in ("false", "true"):
        with running_server(path, "--use_mmap", "false", "--embedding", embedding, "--pooling", "last",
                            "--n_ctx", "256", "--n_parallel", "1") as base:
            routes = [("/v1/completions", {"prompt": "hello", "max_tokens": 2})]
            if embedding == "true":
                routes.append(("/v1/embeddings", {"input": "hello world"}))
            for route, body in routes:
                request = urllib.request.Request(base + route, json.dumps(body).encode(),
                                                 {"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=60) as response:
                    assert response.status == 200
            sizes[embedding] = resident_mib(base.pid)
    assert sizes["false"] > weights_mib  # the weights are resident
    assert sizes["true"] <= 1.2 * sizes["false"], (sizes, weights_mib)


@pytest.mark.parametrize("draft", ["partly right", "draft model"])
def test_speculation_in_the_engine_changes_nothing_but_speed(tiny_spm, draft):
    from pyllama import DraftModel

    prompt_text = "the planets the planets the planets of the solar system are the planets"
    with Model(tiny_spm[0]) as model:
        tokens = model.tokenize(prompt_text)
        params = SamplingParams(temperature=0, logit_bias=READABLE)
        plain = Engine(model, n_ctx=512, n_parallel=2, n_threads=2)
        try:
            expected = run_job(plain, Request(tokens, params), max_tokens=60)
        finally:
            plain.close()
        answer = [token for event in expected for token in event.ids]

        def partly_right(input_ids: np.ndarray, max_tokens: int = 8) -> np.ndarray:
            """Four guesses of plain decoding's own, then a token it never picks: guesses are
            worth making (the policy drafts), and verification both keeps and rejects."""
            done = len(input_ids) - len(tokens)
            return np.array(answer[done:done + 4] + [2], dtype=np.int32)[:max_tokens]

        drafters = [partly_right, partly_right] if draft == "partly right" else \
            [DraftModel(model, n_ctx=512), DraftModel(model, n_ctx=512)]  # the target as its own draft: all agree
        engine = Engine(model, n_ctx=512, n_parallel=2, n_threads=2, drafters=drafters)
        try:
            for _ in range(2):  # the second run has a cost model to go by
                got = run_job(engine, Request(tokens, params), max_tokens=60)
                assert "".join(e.text for e in got) == "".join(e.text for e in expected)
                assert got[-1].usage == expected[-1].usage
            policy = engine.slots[0].policy or engine.slots[1].policy
            assert policy.stats.drafted > 0 and policy.stats.accepted > 0
            if draft == "partly right":
                assert policy.stats.accepted < policy.stats.drafted
        finally:
            engine.close()
            for drafter in drafters:
                if isinstance(drafter, DraftModel):
                    drafter.close()


def test_the_prompt_cache_gives_back_a_prefix_a_slot_lost(tiny_spm):
    from pyllama.generation.cache import RAMCache

    with Model(tiny_spm[0]) as model:
        engine = Engine(model, n_ctx=512, n_parallel=1, n_threads=2, prompt_cache=RAMCache(64 << 20))
        try:
            params = SamplingParams(temperature=0, logit_bias=READABLE)
            first = model.tokenize("the planets of the solar system are " * 6)
            other = model.tokenize("hello world, what is your name? " * 6)
            expected = run_job(engine, Request(first, params), max_tokens=8)
            run_job(engine, Request(other, params), max_tokens=8)  # the only slot moves on
            again = run_job(engine, Request(first, params), max_tokens=8)
            assert again[-1].timings["cache_n"] >= len(first) - 1  # its prefix came back from RAM
            assert "".join(e.text for e in again) == "".join(e.text for e in expected)
        finally:
            engine.close()


def test_a_full_shared_cache_ends_one_request_with_an_error(tiny_spm):
    with Model(tiny_spm[0]) as model:
        engine = Engine(model, n_ctx=256, n_parallel=2, n_batch=256, n_threads=2)
        try:
            params = SamplingParams(temperature=0, logit_bias=READABLE)
            outcomes: queue.Queue[list[Event]] = queue.Queue()
            prompts = [model.tokenize("hello world " * 20)[:100], model.tokenize("the planets " * 20)[:100]]
            threads = [threading.Thread(target=lambda p=p: outcomes.put(run_job(engine, Request(p, params), 120)))
                       for p in prompts]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            finals = sorted((outcomes.get()[-1] for _ in prompts), key=lambda e: e.error is None)
            assert "context size has been exceeded" in finals[0].error  # 2 x (100 + 120) > 256 cells
            assert finals[1].error is None and finals[1].usage["completion_tokens"] == 120
        finally:
            engine.close()
