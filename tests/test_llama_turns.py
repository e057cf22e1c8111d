"""Issue 12: a stream left open on a Llama never makes a later call hang (pyllama.turns).

Same thread: the new call ends the open stream, whose next read raises StreamPreemptedError.
Another thread: its call waits for the stream to be closed, then proceeds. Each scenario runs
in a worker thread joined with a timeout, so a hang fails the test instead of freezing it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pyllama import Llama
from pyllama.errors import StreamPreemptedError

READABLE = {t: -100.0 for t in range(3, 259)} | {2: -100.0}  # words and letters only, never EOS
HANG = 60.0


@pytest.fixture(scope="module")
def llm(tiny_spm) -> Iterator[Llama]:
    with Llama(model_path=str(tiny_spm[0]), n_ctx=512, seed=1, n_threads=1) as loaded:
        yield loaded


def greedy(llm: Llama, prompt: str, **kwargs: Any) -> Any:
    return llm(prompt, **({"temperature": 0, "logit_bias": READABLE, "max_tokens": 24} | kwargs))


def text(out: dict[str, Any]) -> str:
    return out["choices"][0]["text"]


def within(seconds: float, scenario: Callable[[], None]) -> None:
    """Run ``scenario`` on a thread of its own; fail if it hangs or raises."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            scenario()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the test's thread
            failures.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "the scenario hung"
    if failures:
        raise failures[0]


def test_a_new_call_on_the_streams_thread_ends_the_stream(llm):
    expected = text(greedy(llm, "hello world"))
    streamed_alone = "".join(text(c) for c in greedy(llm, "the planets", stream=True))

    def scenario() -> None:
        stream = greedy(llm, "the planets", stream=True)
        first = next(stream)
        assert streamed_alone.startswith(text(first))
        assert text(greedy(llm, "hello world")) == expected  # answered, and not spoiled by the open stream
        with pytest.raises(StreamPreemptedError, match="later call"):
            next(stream)
        with pytest.raises(StopIteration):  # ended for good
            next(stream)
        # a new stream on the same Llama goes as if the old one had never been
        assert "".join(text(c) for c in greedy(llm, "the planets", stream=True)) == streamed_alone

    within(HANG, scenario)


def test_an_abandoned_chat_stream_does_not_block_the_next_call(llm):
    messages = [{"role": "user", "content": "the planets"}]
    expected = llm.create_chat_completion(messages, max_tokens=8, temperature=0, logit_bias=READABLE)

    def scenario() -> None:
        abandoned = llm.create_chat_completion(messages, max_tokens=64, temperature=0, logit_bias=READABLE,
                                               stream=True)
        next(abandoned)
        next(abandoned)  # the role chunk, then content: the stream is generating
        again = llm.create_chat_completion(messages, max_tokens=8, temperature=0, logit_bias=READABLE)
        assert again["choices"][0]["message"] == expected["choices"][0]["message"]
        with pytest.raises(StreamPreemptedError):
            for _ in abandoned:
                pass

    within(HANG, scenario)


def test_another_threads_call_waits_for_the_stream_then_proceeds(llm):
    expected = text(greedy(llm, "hello world"))
    streamed_alone = "".join(text(c) for c in greedy(llm, "the planets", max_tokens=48, stream=True))

    def scenario() -> None:
        stream = greedy(llm, "the planets", max_tokens=48, stream=True)
        pieces = [text(next(stream))]
        other: dict[str, str] = {}
        finished = threading.Event()

        def call() -> None:
            other["text"] = text(greedy(llm, "hello world"))
            finished.set()

        waiter = threading.Thread(target=call, daemon=True)
        waiter.start()
        # It cannot run while this thread holds the stream: it would change the KV memory under it.
        assert not finished.wait(0.5), "another thread's call ran while the stream was open"
        pieces += [text(chunk) for chunk in stream]  # read on: not preempted by the other thread
        assert "".join(pieces) == streamed_alone
        assert finished.wait(HANG), "the waiting call never proceeded after the stream ended"
        assert other["text"] == expected

    within(HANG * 2, scenario)


def test_closing_a_stream_early_lets_another_thread_proceed(llm):
    expected = text(greedy(llm, "hello world"))

    def scenario() -> None:
        stream = greedy(llm, "the planets", max_tokens=200, stream=True)
        next(stream)
        other: dict[str, str] = {}
        waiter = threading.Thread(target=lambda: other.update(text=text(greedy(llm, "hello world"))), daemon=True)
        waiter.start()
        assert waiter.is_alive()
        stream.close()  # the user is done with it: the turn is released at once
        waiter.join(HANG)
        assert not waiter.is_alive() and other["text"] == expected

    within(HANG * 2, scenario)
