"""pyllama convert: a tiny Hugging Face llama (random weights, transformers) becomes a GGUF whose
logits match the transformers forward pass."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
import sentencepiece
import torch
import transformers

from pyllama import Batch, Context, Model
from pyllama.enums import GGMLType

TEXT = ["the planets of the solar system", "hello world, how are you today?", "一天 bob said hello"] * 30


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf-llama")
    proto = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(TEXT), model_writer=proto, vocab_size=320,
                                             model_type="bpe", byte_fallback=True, minloglevel=2)
    (folder / "tokenizer.model").write_bytes(proto.getvalue())
    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                                      rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    return folder, model


def test_converted_model_matches_transformers(hf_model, tmp_path):
    folder, model = hf_model
    out = tmp_path / "converted.gguf"
    result = subprocess.run([sys.executable, "-m", "pyllama", "convert", str(folder), "--outfile", str(out),
                             "--outtype", "f32"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    tokens = [1, 5, 17, 42, 7, 99, 3, 60, 61, 8]
    with torch.no_grad():
        expected = model(torch.tensor([tokens])).logits[0].numpy()
    with Model(out) as converted, Context(converted, n_ctx=64, type_k=GGMLType.F32, type_v=GGMLType.F32) as ctx:
        assert converted.architecture == "llama" and converted.vocab.n_tokens == 320
        ctx.decode(Batch.of(tokens, output=True))
        ours = np.stack([np.array(ctx.logits(i)) for i in range(len(tokens))])
    np.testing.assert_allclose(ours, expected, atol=2e-3, rtol=1e-3)


def test_convert_errors_are_clear(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pyllama", "convert", str(tmp_path / "nothing")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
