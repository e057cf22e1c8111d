"""A model without a chat template (a base model): the format that stands in for it comes from
its vocabulary's family, is announced (server start, /props, ``pyllama chat -cnv``), and its
turn markers end a reply even when the model writes them as plain text."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import urllib.request

import gguf
import pytest

from models import spm_vocab, write_llama
from server_process import free_port, running_server

from pyllama import Llama

GEMMA_MARKERS = ["<start_of_turn>", "<end_of_turn>"]


@pytest.fixture(scope="module")
def gemma_vocab_model(tmp_path_factory):
    """A tiny llama whose vocabulary has Gemma's turn tokens, and no chat template (like Gemma 3 base)."""
    vocab = spm_vocab()
    vocab = dataclasses.replace(vocab, tokens=vocab.tokens + GEMMA_MARKERS,
                                types=vocab.types + [int(gguf.TokenType.CONTROL)] * 2,
                                scores=vocab.scores + [0.0, 0.0])
    path = tmp_path_factory.mktemp("gemma-vocab") / "tiny-gemma-vocab.gguf"
    write_llama(path, vocab, seed=3)
    return path


def test_the_vocabulary_family_picks_the_format_and_it_is_said(gemma_vocab_model):
    with Llama(str(gemma_vocab_model), n_ctx=256) as llm:
        template = llm.chat_template
        assert template.format == "gemma" and template.fallback.evidence == tuple(GEMMA_MARKERS)
        assert template.fallback.note.startswith("the model has no chat template; chats use the gemma format")
        assert "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n" in template.render(
            [{"role": "user", "content": "hi"}])
        assert set(GEMMA_MARKERS) <= set(template.stop)


def test_chatml_is_the_last_resort_and_says_the_model_may_not_know_it(tiny_spm):
    with Llama(str(tiny_spm[0]), n_ctx=256) as llm:
        fallback = llm.chat_template.fallback
        assert fallback.format == "chatml" and fallback.evidence == ()
        assert "may not know" in fallback.note
        assert {"<|im_start|>", "<|im_end|>"} <= set(llm.chat_template.stop)


def test_a_template_of_its_own_or_a_chosen_format_is_not_a_fallback(tmp_path, tiny_spm):
    path = tmp_path / "templated.gguf"
    write_llama(path, "spm", chat_template="{% for m in messages %}{{ m.content }}{% endfor %}")
    with Llama(str(path), n_ctx=256) as llm:
        assert llm.chat_template.fallback is None
    with Llama(str(tiny_spm[0]), n_ctx=256, chat_format="llama-3") as llm:
        assert llm.chat_template.fallback is None and "<|start_header_id|>" in llm.chat_template.stop


@pytest.mark.parametrize("marker", ["<|im_start|>", "<|im_end|>"])
def test_a_turn_marker_written_as_plain_text_ends_the_reply(tiny_spm, marker):
    # the grammar makes the model spell the marker out of ordinary pieces, as a base model imitating the
    # prompt does: the reply must end before it, never show it
    grammar = f'root ::= "Paris{marker}editor\\nmore text"'
    with Llama(str(tiny_spm[0]), n_ctx=256) as llm:
        out = llm.create_chat_completion([{"role": "user", "content": "capital of France?"}], grammar=grammar,
                                         max_tokens=60, temperature=0)
    assert out["choices"][0]["message"]["content"] == "Paris"
    assert out["choices"][0]["finish_reason"] == "stop"


def test_the_server_says_so_at_start_and_in_props(gemma_vocab_model):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "pyllama.server", "--model", str(gemma_vocab_model),
                                "--port", str(port), "--n_ctx", "256"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        lines = [process.stdout.readline() for _ in range(2)]
        assert lines[0].startswith("pyllama server on http://127.0.0.1:"), lines
        assert lines[1].startswith("tiny-gemma-vocab.gguf: the model has no chat template; chats use the gemma "
                                   "format instead (its vocabulary has <start_of_turn> and <end_of_turn>)"), lines
        assert "the chat page starts in text mode" in lines[1]
    finally:
        process.terminate()
        process.wait(timeout=30)
    with running_server(gemma_vocab_model, "--n_ctx", "256") as base:
        with urllib.request.urlopen(base + "/props") as response:
            props = json.load(response)
    assert props["has_chat_template"] is False and props["chat_format"] == "gemma"
    assert "no chat template" in props["chat_template_note"]


def test_a_model_with_a_template_says_nothing_of_a_fallback(tmp_path):
    path = tmp_path / "templated.gguf"
    write_llama(path, "spm", chat_template="{% for m in messages %}{{ m.content }}{% endfor %}")
    with running_server(path, "--n_ctx", "256") as base:
        with urllib.request.urlopen(base + "/props") as response:
            props = json.load(response)
    assert props["has_chat_template"] is True and props["chat_template_note"] is None


def test_a_turn_marker_that_is_a_control_token_ends_the_reply(gemma_vocab_model):
    """<start_of_turn> renders as no text, so no stop string could see it: it ends the reply as a token."""
    with Llama(str(gemma_vocab_model), n_ctx=256) as llm:
        start_of_turn = llm.tokenize(b"<start_of_turn>", add_bos=False, special=True)
        assert len(start_of_turn) == 1 and not llm.model.vocab.is_eog(start_of_turn[0])
        out = llm.create_chat_completion([{"role": "user", "content": "hi"}], max_tokens=20, temperature=0,
                                         logit_bias={start_of_turn[0]: 100.0})
    assert out["choices"][0]["finish_reason"] == "stop" and out["usage"]["completion_tokens"] == 0


def test_a_template_that_writes_bos_gives_one_bos_and_no_tokenizer_warning(gemma_vocab_model, caplog):
    """The gemma format starts with ``{{ bos_token }}`` and tokenizing adds BOS too: the rendered
    BOS is dropped before tokenizing (as llama.cpp does), so llama.cpp never warns of 2 BOS."""
    from pyllama import ChatSession
    from pyllama.chat import plan_chat

    messages = [{"role": "user", "content": "hi"}]
    with Llama(str(gemma_vocab_model), n_ctx=256) as llm, caplog.at_level("WARNING", logger="pyllama"):
        vocab = llm.model.vocab
        assert vocab.add_bos and llm.chat_template.render(messages).startswith(llm.chat_template.bos_token)
        plan = plan_chat(llm.chat_template, vocab, messages)
        assert plan.prompt_tokens[0] == vocab.bos and plan.prompt_tokens[1] != vocab.bos
        assert not plan.prompt.startswith(llm.chat_template.bos_token)
        llm.create_chat_completion(messages, max_tokens=2)
        ChatSession(llm, max_tokens=2).send("hi")
    assert not [r for r in caplog.records if "BOS" in r.getMessage()]
