"""LoRA adapters and control vectors change the logits exactly as the merged-weight reference says."""

from __future__ import annotations

import numpy as np
import pytest

from models import reference_logits, with_lora, write_lora
from pyllama import Batch, Context, LlamaError, LoraAdapter
from pyllama.enums import GGMLType

PROMPT = "hello world, the solar system"


@pytest.fixture(scope="module")
def lora(tiny_spm, tmp_path_factory):
    weights = tiny_spm[1]
    targets = {name: weights[name].shape for name in ("blk.0.attn_q.weight", "blk.1.ffn_up.weight", "output.weight")}
    path = tmp_path_factory.mktemp("lora") / "adapter.gguf"
    return path, write_lora(path, targets, rank=4, alpha=8.0, seed=11)


def logits(ctx: Context, tokens: list[int]) -> np.ndarray:
    ctx.kv_clear()
    ctx.decode(Batch.of(tokens, output=True))
    return np.stack([np.array(ctx.logits(i)) for i in range(len(tokens))])


def test_lora_switched_per_call_matches_merged_weights(model, tiny_spm, lora):
    tokens = model.tokenize(PROMPT)
    adapter = LoraAdapter(model, lora[0])
    with Context(model, n_ctx=128, type_k=GGMLType.F32, type_v=GGMLType.F32) as ctx:
        base = logits(ctx, tokens)
        for scale in (1.0, 0.5):
            ctx.set_loras({adapter: scale})
            expected = reference_logits(with_lora(tiny_spm[1], lora[1], scale), tokens)
            np.testing.assert_allclose(logits(ctx, tokens), expected, atol=2e-2, rtol=1e-2)
        ctx.set_loras({})
        np.testing.assert_allclose(logits(ctx, tokens), base, atol=1e-5)
    assert np.abs(expected - base).max() > 0.1  # the adapter does change the output


def test_bad_adapters_raise(model, tiny_spm, tmp_path):
    with pytest.raises(FileNotFoundError):
        LoraAdapter(model, tmp_path / "none.gguf")
    with pytest.raises(LlamaError, match="adapter"):
        LoraAdapter(model, tiny_spm[0])  # a model, not an adapter


def test_control_vector_offsets_layer_output(model, tiny_spm):
    tokens = model.tokenize(PROMPT)
    rng = np.random.default_rng(5)
    vector = rng.standard_normal((model.n_layer - 1, model.n_embd)).astype(np.float32)  # rows for layers 1..
    with Context(model, n_ctx=128, type_k=GGMLType.F32, type_v=GGMLType.F32) as ctx:
        base = logits(ctx, tokens)
        ctx.set_control_vector(vector)
        expected = reference_logits(tiny_spm[1], tokens, layer_offsets={1: vector[0]})
        np.testing.assert_allclose(logits(ctx, tokens), expected, atol=2e-2, rtol=1e-2)
        ctx.set_control_vector(None)
        np.testing.assert_allclose(logits(ctx, tokens), base, atol=1e-5)
        with pytest.raises(ValueError, match="n_embd"):
            ctx.set_control_vector(np.zeros(model.n_embd + 1, dtype=np.float32))
