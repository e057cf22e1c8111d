"""Where llama.cpp's own server suite found pyllama answering differently from llama-server (issue 25,
point 3), checked here against a real server: the /detokenize round trip, and the timings that
come with return_progress's events."""

from __future__ import annotations

import json

import pytest
from server_process import running_server

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")


def test_detokenize_gives_back_the_text_that_was_tokenized(tiny_bpe):
    """A byte-level BPE vocab: llama_detokenize cleans up its spaces, token pieces do not."""
    text = "What is the capital of France ? Its name , said bob ."
    with running_server(tiny_bpe[0], "-c", "256", "--n_threads", "1") as base, httpx.Client(timeout=60) as client:
        tokens = client.post(f"{base}/tokenize", json={"content": text}).json()["tokens"]
        assert len(tokens) > 5
        content = client.post(f"{base}/detokenize", json={"tokens": tokens}).json()["content"]
        assert content.strip() == text  # llama_detokenize's space clean-up would give "France?"


def test_prompt_progress_events_carry_the_timings_so_far(tiny_spm):
    prompt = "the quick brown fox jumps over the lazy dog " * 8
    with running_server(tiny_spm[0], "-c", "512", "-b", "16", "--n_threads", "1") as base, \
            httpx.Client(timeout=60) as client:
        body = {"prompt": prompt, "n_predict": 4, "stream": True, "return_progress": True}
        with client.stream("POST", f"{base}/completion", json=body) as response:
            chunks = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    progress = [c for c in chunks if "prompt_progress" in c]
    assert len(progress) > 1
    first = progress[0]["timings"]
    assert (first["prompt_n"], first["prompt_ms"], first["predicted_n"]) == (0, 0.0, 0)
    prompt_ms = 0.0
    for chunk in progress:
        timings = chunk["timings"]
        assert all(value is not None and value >= 0 for value in timings.values())
        assert timings["prompt_ms"] >= prompt_ms and timings["prompt_n"] == (
            chunk["prompt_progress"]["processed"] - chunk["prompt_progress"]["cache"])
        prompt_ms = timings["prompt_ms"]
    assert prompt_ms > 0
