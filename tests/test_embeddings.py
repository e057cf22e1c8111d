"""Embeddings from a BERT-style model: pooled and per token, against a numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from models import reference_bert_embedding
from pyllama import Batch, Context, Model
from pyllama.enums import PoolingType, VocabType

TEXTS = ["hello world, the cats sat on the mat", "a search query about llamas", "the dog sat"]


@pytest.fixture(scope="module")
def bert(tiny_bert):
    with Model(tiny_bert[0]) as model:
        yield model


def embedding_context(model: Model, **kwargs) -> Context:
    return Context(model, embeddings=True, n_ctx=128, n_batch=128, n_ubatch=128, n_seq_max=4, **kwargs)


def test_wordpiece_tokenizer(bert):
    assert bert.vocab.type == VocabType.WPM
    tokens = bert.tokenize("hello world, the cats sat")
    assert tokens[0] == bert.vocab.bos and tokens[-1] == bert.vocab.sep
    assert [bert.vocab.text(t) for t in tokens[1:3]] == ["▁hello", "▁world"]
    assert bert.detokenize(tokens, remove_special=True).strip() == "hello world, the cats sat"


def test_mean_pooled_embedding_matches_reference(bert, tiny_bert):
    with embedding_context(bert) as ctx:
        assert ctx.pooling_type == PoolingType.MEAN
        for text in TEXTS:
            tokens = bert.tokenize(text)
            ctx.kv_clear()
            ctx.encode(Batch.of(tokens, output=True))
            np.testing.assert_allclose(ctx.sequence_embeddings(0), reference_bert_embedding(tiny_bert[1], tokens),
                                       atol=2e-3)


def test_sequences_in_one_batch_are_pooled_separately(bert, tiny_bert):
    token_lists = [bert.tokenize(text) for text in TEXTS]
    with embedding_context(bert) as ctx:
        batch = Batch(sum(map(len, token_lists)), n_seq_max=1)
        for seq_id, tokens in enumerate(token_lists):
            batch.add_sequence(tokens, seq_id=seq_id, output=True)
        ctx.encode(batch)
        for seq_id, tokens in enumerate(token_lists):
            np.testing.assert_allclose(ctx.sequence_embeddings(seq_id),
                                       reference_bert_embedding(tiny_bert[1], tokens), atol=2e-3)


def test_per_token_embeddings_and_cls_pooling(bert):
    tokens = bert.tokenize(TEXTS[0])
    with embedding_context(bert, pooling_type=PoolingType.NONE) as ctx:
        ctx.encode(Batch.of(tokens, output=True))
        rows = np.stack([np.array(ctx.embeddings(i)) for i in range(len(tokens))])
        with pytest.raises(IndexError):
            ctx.sequence_embeddings(0)
    assert rows.shape == (len(tokens), bert.n_embd)
    with embedding_context(bert) as ctx:
        ctx.encode(Batch.of(tokens, output=True))
        np.testing.assert_allclose(ctx.sequence_embeddings(0), rows.mean(0), atol=1e-4)
    with embedding_context(bert, pooling_type=PoolingType.CLS) as ctx:
        ctx.encode(Batch.of(tokens, output=True))
        np.testing.assert_allclose(ctx.sequence_embeddings(0), rows[0], atol=1e-4)


def test_no_embeddings_without_asking(model):
    with Context(model, n_ctx=64) as ctx:
        ctx.decode(Batch.of(model.tokenize("hello")))
        with pytest.raises(IndexError, match="embeddings=True"):
            ctx.embeddings(-1)
