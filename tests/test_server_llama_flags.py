"""llama-server's flags and fields that its own suite passes, over a real server (issue 25, point 3):
--no-jinja (llama.cpp's built-in template handling), --cache-idle-slots / --no-cache-idle-slots,
and post_sampling_probs (probabilities after the sampler chain). --media-path is in
test_server_vision.py (it needs a projector); GET /models?reload=1 in test_server_lifecycle.py."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from server_process import running_server

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

# a template llama.cpp recognizes as chatml by its markers, written so that jinja renders it otherwise
CHATML_LOOKALIKE = "{% for m in messages %}<|im_start|>{{ m.role }}: {{ m.content }}{% endfor %}"
HI = {"messages": [{"role": "user", "content": "hi"}]}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}


def rendered(client: httpx.Client, base: str) -> str:
    response = client.post(f"{base}/apply-template", json=HI)
    assert response.status_code == 200, response.text
    return response.json()["prompt"]


def test_no_jinja_formats_the_chat_with_llama_cpps_built_in_handling(tiny_spm, tmp_path):
    template = tmp_path / "chatml-lookalike.jinja"
    template.write_text(CHATML_LOOKALIKE)
    flags = ("-c", "256", "--n_threads", "1", "--chat-template-file", str(template))
    with httpx.Client(timeout=60) as client:
        with running_server(tiny_spm[0], *flags) as base:
            assert rendered(client, base) == "<|im_start|>user: hi"  # jinja runs the template as written
        with running_server(tiny_spm[0], *flags, "--no-jinja") as base:
            assert rendered(client, base) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
            chat = client.post(f"{base}/v1/chat/completions", json={**HI, "max_tokens": 2})
            assert chat.status_code == 200
            tools = client.post(f"{base}/v1/chat/completions", json={**HI, "max_tokens": 2, "tools": [TOOL]})
            assert tools.status_code == 400 and "jinja" in tools.json()["error"]["message"]
        with running_server(tiny_spm[0], "-c", "256", "--n_threads", "1", "--no-jinja",
                            "--chat-template", "llama2") as base:
            assert rendered(client, base).startswith("[INST] hi")  # a built-in format by name


def test_no_jinja_refuses_to_start_with_a_template_it_does_not_know(tiny_spm):
    """As llama-server: --chat-template under --no-jinja must be one of the commonly used templates."""
    started = subprocess.run([sys.executable, "-m", "pyllama.server", "--model", str(tiny_spm[0]), "--no-jinja",
                              "--chat-template", "{{ messages[0].content }}"],
                             capture_output=True, text=True, timeout=60)
    assert started.returncode == 2 and "not one llama.cpp's built-in handling knows" in started.stderr


LONG = "once upon a time in a land far away there lived a brave knight who rode across the hills " * 3


def cached_tokens(client: httpx.Client, base: str) -> list[int]:
    return [slot["n_cached"] for slot in client.get(f"{base}/slots").json()]


@pytest.mark.parametrize("idle_slots", [True, False])
def test_cache_idle_slots_moves_an_idle_slots_prompt_to_the_ram_cache(tiny_spm, idle_slots):
    """With --cache-ram and one KV cache shared by the slots, a request that starts frees the idle
    slots' KV, their prompts kept in the RAM cache (llama-server's default); --no-cache-idle-slots
    leaves them. Either way the prompt comes back from a cache."""
    flags = ["-c", "1024", "-np", "2", "-kvu", "--cache-ram", "64", "--n_threads", "1"]
    with running_server(tiny_spm[0], *flags, *([] if idle_slots else ["--no-cache-idle-slots"])) as base, \
            httpx.Client(timeout=60) as client:
        greedy = {"n_predict": 2, "temperature": 0}
        first = client.post(f"{base}/completion", json={"prompt": LONG, **greedy, "id_slot": 0}).json()
        assert cached_tokens(client, base)[0] > 0
        client.post(f"{base}/completion", json={"prompt": "the quick brown fox", **greedy, "id_slot": 1})
        assert (cached_tokens(client, base)[0] == 0) == idle_slots
        again = client.post(f"{base}/completion", json={"prompt": LONG, **greedy}).json()
        assert again["timings"]["cache_n"] > 0 and again["timings"]["prompt_n"] < first["timings"]["prompt_n"]
        assert again["content"] == first["content"]


def completion_probabilities(client: httpx.Client, base: str, **fields) -> list[dict]:
    body = {"prompt": "the quick brown fox", "n_predict": 6, "n_probs": 5, "post_sampling_probs": True, **fields}
    response = client.post(f"{base}/completion", json=body)
    assert response.status_code == 200, response.text
    return response.json()["completion_probabilities"]


def test_post_sampling_probs_are_the_sampler_chains_probabilities(tiny_spm):
    with running_server(tiny_spm[0], "-c", "256", "--n_threads", "1") as base, httpx.Client(timeout=60) as client:
        greedy = completion_probabilities(client, base, temperature=0)
        assert len(greedy) == 6
        for token in greedy:  # the chain put everything on its choice, as llama-server's temperature 0
            assert "logprob" not in token and "top_logprobs" not in token
            assert token["prob"] == 1.0
            assert token["top_probs"] == [{"id": token["id"], "token": token["token"], "bytes": token["bytes"],
                                           "prob": 1.0}]
        drawn = completion_probabilities(client, base, temperature=1.0, top_k=3, seed=7)
        for token in drawn:  # what top_k left: at most 3 tokens whose probabilities sum to 1
            probs = [p["prob"] for p in token["top_probs"]]
            assert 0 < len(probs) <= 3 and all(0 < p <= 1 for p in probs) and probs == sorted(probs, reverse=True)
            assert sum(probs) == pytest.approx(1.0, abs=1e-5)
            assert token["prob"] == next(p["prob"] for p in token["top_probs"] if p["id"] == token["id"])
        wide = completion_probabilities(client, base, temperature=1.0, seed=7)
        for token in wide:  # the 5 most likely of what the default chain left
            probs = [p["prob"] for p in token["top_probs"]]
            assert 0 < len(probs) <= 5 and sum(probs) <= 1.0 + 1e-6
        before = client.post(f"{base}/completion", json={"prompt": "the quick brown fox", "n_predict": 6,
                                                          "n_probs": 5, "temperature": 0}).json()
        assert [t["id"] for t in before["completion_probabilities"]] == [t["id"] for t in greedy]
        assert all(t["logprob"] <= 0 and t["top_logprobs"][0]["id"] == t["id"]
                   for t in before["completion_probabilities"])


def test_post_sampling_probs_in_chat(tiny_spm):
    with running_server(tiny_spm[0], "-c", "256", "--n_threads", "1") as base, httpx.Client(timeout=60) as client:
        body = {**HI, "max_tokens": 4, "temperature": 0, "logprobs": True, "top_logprobs": 3,
                "post_sampling_probs": True}
        content = client.post(f"{base}/v1/chat/completions", json=body).json()["choices"][0]["logprobs"]["content"]
        assert len(content) == 4
        assert all(entry["prob"] == 1.0 and entry["top_probs"][0]["id"] == entry["id"] for entry in content)
        with client.stream("POST", f"{base}/v1/chat/completions", json={**body, "stream": True}) as response:
            chunks = [json.loads(line[6:]) for line in response.iter_lines()
                      if line.startswith("data: ") and line != "data: [DONE]"]
        streamed = [entry for chunk in chunks for choice in chunk["choices"]
                    for entry in ((choice.get("logprobs") or {}).get("content") or [])]
        assert [entry["id"] for entry in streamed] == [entry["id"] for entry in content]
        assert all(not math.isnan(entry["prob"]) for entry in streamed)
