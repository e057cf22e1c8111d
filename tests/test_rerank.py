"""Reranking: the pair input llama.cpp builds, scores against a numpy reference of the tiny
reranker, Llama.rerank, and the server's /rerank routes over real sockets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models import reference_bert_hidden, reference_rerank_score, write_bert
from pyllama import Context, Llama, Model
from pyllama.embedding import evaluate
from pyllama.enums import PoolingType
from pyllama.errors import ContextOverflowError
from pyllama.rerank import pair_tokens, ranking
from server_process import running_server
from test_server import post

QUERY = "search query about llamas"
DOCUMENTS = ["the cat sat on the mat", "llamas and cats", "hello world", "a dog is about the document"]
TEMPLATE = "[CLS]query: {query}[SEP]document: {document}[SEP]"


@pytest.fixture(scope="module")
def reranker(models_dir):
    """(path, weights) of a tiny BERT cross-encoder without a pooling type of its own."""
    path = models_dir / "tiny-reranker.gguf"
    return path, write_bert(path, seed=7, reranker=True)


@pytest.fixture(scope="module")
def llm(reranker):
    with Llama(reranker[0], embedding=True, pooling_type=PoolingType.RANK, n_ctx=128) as loaded:
        yield loaded


def reference_scores(llm: Llama, weights, documents=DOCUMENTS) -> list[float]:
    return [reference_rerank_score(weights, pair_tokens(llm.model, QUERY, d)) for d in documents]


def test_pair_is_bos_query_eos_sep_document_eos(llm):
    vocab, model = llm.model.vocab, llm.model
    assert (vocab.bos, vocab.eos, vocab.sep) == (2, 3, 3) and vocab.add_bos and vocab.add_eos and vocab.add_sep
    query, document = model.tokenize(QUERY, add_special=False), model.tokenize("the dog", add_special=False)
    assert pair_tokens(model, QUERY, "the dog") == [2, *query, 3, 3, *document, 3]


def test_rerank_template_is_filled_once(models_dir):
    path = models_dir / "tiny-reranker-template.gguf"
    write_bert(path, seed=7, reranker=True, rerank_template=TEMPLATE)
    with Model(path) as model:
        expected = model.tokenize("[CLS]query: the {document}[SEP]document: dog[SEP]", add_special=False,
                                  parse_special=True)
        tokens = pair_tokens(model, "the {document}", "dog")
        assert tokens == expected and tokens[0] == model.vocab.bos and tokens.count(model.vocab.sep) == 2


def test_scores_match_the_numpy_reference(llm, reranker):
    expected = reference_scores(llm, reranker[1])
    assert max(expected) - min(expected) > 0.5  # the documents are told apart, so the order means something
    results = llm.rerank(QUERY, DOCUMENTS)
    assert [r["index"] for r in results] == sorted(range(len(DOCUMENTS)), key=lambda i: -expected[i])
    for result in results:
        assert result.keys() == {"index", "relevance_score"}
        assert result["relevance_score"] == pytest.approx(expected[result["index"]], abs=2e-3)


def test_top_n_documents_and_normalize(llm):
    raw = llm.rerank(QUERY, DOCUMENTS)
    best = llm.rerank(QUERY, DOCUMENTS, top_n=2, return_documents=True, normalize=True)
    assert [r["index"] for r in best] == [r["index"] for r in raw[:2]]
    for mine, plain in zip(best, raw):
        assert mine["document"] == {"text": DOCUMENTS[mine["index"]]}
        assert mine["relevance_score"] == pytest.approx(1 / (1 + math.exp(-plain["relevance_score"])))
    assert len(llm.rerank(QUERY, DOCUMENTS, top_n=99)) == len(DOCUMENTS)


def test_ranking_is_stable_and_sigmoid_does_not_overflow():
    results = ranking([1.0, 3.0, 1.0, -1000.0], normalize=True)
    assert [r["index"] for r in results] == [1, 0, 2, 3] and results[-1]["relevance_score"] == 0.0
    with pytest.raises(ValueError, match="top_n"):
        ranking([1.0], top_n=0)


def test_rerank_leaves_the_context_clean(llm):
    first = llm.rerank(QUERY, DOCUMENTS)
    llm.rerank("hello", ["world"] * 3)
    assert llm.rerank(QUERY, DOCUMENTS) == first


def test_bad_inputs(llm):
    with pytest.raises(ValueError, match="query is empty"):
        llm.rerank("", DOCUMENTS)
    with pytest.raises(ValueError, match="no documents"):
        llm.rerank(QUERY, [])
    with pytest.raises(TypeError, match="list of strings"):
        llm.rerank(QUERY, "one document")
    with pytest.raises(ContextOverflowError, match="document 1 .* at most 128"):
        llm.rerank(QUERY, ["the cat", "the cat " * 100])


def test_a_context_without_rank_pooling_is_refused(reranker):
    with Llama(reranker[0], embedding=True, n_ctx=128) as plain:
        with pytest.raises(ValueError, match="pooling_type=PoolingType.RANK"):
            plain.rerank(QUERY, DOCUMENTS)


# --- the server --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(reranker):
    # without flash attention, as Llama by default: test_tei_shape compares the two to 1e-4
    with running_server(reranker[0], "--reranking", "--n_ctx", "128", "--n_threads", "1",
                        "--n_parallel", "1", "-fa", "off") as base:
        yield base


@pytest.mark.parametrize("route", ["/rerank", "/v1/rerank", "/reranking"])
def test_rerank_route(server, llm, reranker, route):
    status, body, _ = post(server + route, {"query": QUERY, "documents": DOCUMENTS, "top_n": 3})
    assert status == 200 and body["object"] == "list" and body["model"] == "tiny-reranker.gguf"
    expected = reference_scores(llm, reranker[1])
    assert [r["index"] for r in body["results"]] == sorted(range(4), key=lambda i: -expected[i])[:3]
    for result in body["results"]:
        assert result.keys() == {"index", "relevance_score"}
        assert result["relevance_score"] == pytest.approx(expected[result["index"]], abs=2e-3)
    count = sum(len(pair_tokens(llm.model, QUERY, d)) for d in DOCUMENTS)
    assert body["usage"] == {"prompt_tokens": count, "total_tokens": count}


def test_rerank_documents_as_objects_and_returned(server):
    status, body, _ = post(server + "/v1/rerank", {"query": QUERY, "return_documents": True,
                                                   "documents": [{"text": d} for d in DOCUMENTS]})
    assert status == 200 and len(body["results"]) == 4
    assert all(r["document"] == {"text": DOCUMENTS[r["index"]]} for r in body["results"])


def test_tei_shape(server, llm):
    status, body, _ = post(server + "/rerank", {"query": QUERY, "texts": DOCUMENTS, "return_text": True, "top_n": 2})
    assert status == 200 and isinstance(body, list) and len(body) == 2
    ours = llm.rerank(QUERY, DOCUMENTS, top_n=2)
    for result, mine in zip(body, ours):
        assert result.keys() == {"index", "score", "text"} and result["text"] == DOCUMENTS[result["index"]]
        assert result["index"] == mine["index"] and result["score"] == pytest.approx(mine["relevance_score"], abs=1e-4)


@pytest.mark.parametrize("body, fragment", [
    ({"query": QUERY, "documents": []}, "documents"),
    ({"query": QUERY, "documents": None}, "not both"),
    ({"query": QUERY, "documents": 123}, "documents"),
    ({"query": QUERY, "documents": [1, 2, 3]}, "documents"),
    ({"documents": DOCUMENTS}, "query"),
    ({"query": "", "documents": DOCUMENTS}, "query"),
    ({"query": QUERY, "documents": DOCUMENTS, "texts": DOCUMENTS}, "not both"),
    ({"query": QUERY, "documents": DOCUMENTS, "top_n": 0}, "top_n"),
    ({"query": QUERY, "documents": ["the cat", "the cat " * 100]}, "document 1"),
])
def test_bad_rerank_requests(server, body, fragment):
    status, payload, _ = post(server + "/rerank", body)
    assert status == 400 and fragment in payload["error"]["message"]
    # a document too long for the context is llama-server's exceed_context_size_error
    assert payload["error"]["type"] in ("invalid_request_error", "exceed_context_size_error")
    assert post(server + "/rerank", {"query": QUERY, "documents": DOCUMENTS})[0] == 200


def test_without_reranking_rerank_is_refused_and_pooling_applies_to_embeddings(tiny_bert):
    # --pooling cls: the embedding is the [CLS] row of the last hidden states, normalized
    with running_server(tiny_bert[0], "--embedding", "--pooling", "cls", "--n_ctx", "128", "--n_threads", "1",
                        "--n_parallel", "1") as base:
        status, payload, _ = post(base + "/v1/rerank", {"query": QUERY, "documents": DOCUMENTS})
        assert status == 400 and payload["error"]["code"] == "reranking_disabled"
        assert "--reranking" in payload["error"]["message"]
        status, body, _ = post(base + "/v1/embeddings", {"input": "hello world"})
        with Model(tiny_bert[0], vocab_only=True) as model:
            tokens = model.tokenize("hello world", parse_special=True)
        cls = reference_bert_hidden(tiny_bert[1], tokens)[0]
        np.testing.assert_allclose(body["data"][0]["embedding"], cls / np.linalg.norm(cls), atol=2e-3)


def test_embedding_with_rank_pooling_also_ranks(reranker, llm):
    # llama-server's rule: --embedding --pooling rank serves /rerank from the embedding context
    with running_server(reranker[0], "--embedding", "--pooling", "rank", "--n_ctx", "128", "--n_threads", "1",
                        "--n_parallel", "1") as base:
        status, body, _ = post(base + "/rerank", {"query": QUERY, "documents": DOCUMENTS})
        assert status == 200
        assert [r["index"] for r in body["results"]] == [r["index"] for r in llm.rerank(QUERY, DOCUMENTS)]


def test_a_pooled_causal_model_embeds(tiny_spm):
    # llama_encode on a decoder-only model crashes; pooled embeddings of a Llama go through decode
    with Llama(tiny_spm[0], embedding=True, pooling_type=PoolingType.LAST, n_ctx=64) as plain:
        vector = np.array(plain.embed("hello world", normalize=False))
    with Model(tiny_spm[0]) as model, Context(model, n_ctx=64, embeddings=True, pooling_type=PoolingType.NONE,
                                              flash_attn=False) as per_token:  # as Llama's default
        rows = evaluate(per_token, model.tokenize("hello world", parse_special=True))
    np.testing.assert_allclose(vector, rows[-1], atol=1e-4)
