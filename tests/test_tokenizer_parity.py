"""Tokenizer parity: llama.cpp's tokenizers give the same ids as independent implementations
(a sentencepiece model and a HF `tokenizers` byte-level BPE, both trained here and written to GGUF)."""

from __future__ import annotations

import io

import json

import gguf
import pytest
import sentencepiece
import tokenizers

from models import Vocabulary, bytes_to_unicode, write_llama
from pyllama import Model

CORPUS = [
    "The quick brown fox jumps over the lazy dog.", "Hello world! How are you today?",
    "大型语言模型正在改变世界。", "你好，世界！今天天气很好。", "机器学习和人工智能",
    "emoji 😀 🎉 👩‍👩‍👧 family", "def f(x):\n    return x * 2  # double", "for i in range(10): print(i)",
    "leading and   multiple   spaces", "tabs\tand\nnewlines\n\nhere", "Numbers 12345 and 3.14159",
    "Ünïcödé àccents café naïve", "Q: Name the planets in the solar system? A: Mercury, Venus, Earth",
]
# Held-out text: words, scripts and symbols the vocabularies saw rarely or never (byte fallback).
PROBES = CORPUS + [
    "Jackdaws love my big sphinx of quartz", "сибирь и москва", "日本語のテキスト", "🦙🦙 llama 🚀",
    "x=[1,2,3];y={'a':b}", "ends with spaces   ", "mixed 中文 and English text", "\t\t\n  \n",
]


@pytest.fixture(scope="module")
def sentencepiece_pair(tmp_path_factory):
    proto = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 20), model_writer=proto, vocab_size=400, model_type="bpe",
        byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        character_coverage=1.0, split_digits=True, minloglevel=2)
    processor = sentencepiece.SentencePieceProcessor(model_proto=proto.getvalue())
    n = processor.get_piece_size()

    def kind(i: int) -> int:
        for check, token_type in ((processor.is_unknown, gguf.TokenType.UNKNOWN),
                                  (processor.is_control, gguf.TokenType.CONTROL),
                                  (processor.is_byte, gguf.TokenType.BYTE),
                                  (processor.is_unused, gguf.TokenType.UNUSED)):
            if check(i):
                return int(token_type)
        return int(gguf.TokenType.NORMAL)

    vocab = Vocabulary("llama", [processor.id_to_piece(i) for i in range(n)], [kind(i) for i in range(n)],
                       bos=processor.bos_id(), eos=processor.eos_id(), add_bos=True,
                       scores=[processor.get_score(i) for i in range(n)], unk=processor.unk_id())
    path = tmp_path_factory.mktemp("parity") / "sentencepiece.gguf"
    write_llama(path, vocab)
    with Model(path, vocab_only=True) as model:
        yield processor, model


@pytest.fixture(scope="module")
def hf_bpe_pair(tmp_path_factory):
    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"],
                                             initial_alphabet=list(bytes_to_unicode().values()), show_progress=False)
    tokenizer.train_from_iterator(CORPUS * 20, trainer)
    vocab_map = tokenizer.get_vocab()
    tokens = [token for token, _ in sorted(vocab_map.items(), key=lambda item: item[1])]
    merges = [" ".join(pair) if isinstance(pair, (tuple, list)) else pair
              for pair in json.loads(tokenizer.to_str())["model"]["merges"]]
    end = vocab_map["<|endoftext|>"]
    types = [int(gguf.TokenType.CONTROL if i == end else gguf.TokenType.NORMAL) for i in range(len(tokens))]
    vocab = Vocabulary("gpt2", tokens, types, bos=end, eos=end, add_bos=False, merges=merges, pre="gpt-2")
    path = tmp_path_factory.mktemp("parity") / "hf-bpe.gguf"
    write_llama(path, vocab)
    with Model(path, vocab_only=True) as model:
        yield tokenizer, model


@pytest.mark.parametrize("text", PROBES)
def test_sentencepiece_ids_match(sentencepiece_pair, text):
    processor, model = sentencepiece_pair
    assert model.tokenize(text, add_special=False) == processor.encode(text)
    assert model.tokenize(text) == [processor.bos_id()] + processor.encode(text)


@pytest.mark.parametrize("text", PROBES)
def test_hf_byte_level_bpe_ids_match(hf_bpe_pair, text):
    tokenizer, model = hf_bpe_pair
    ids = tokenizer.encode(text).ids
    assert model.tokenize(text, add_special=False) == ids
    assert model.detokenize(ids) == tokenizer.decode(ids) == text
