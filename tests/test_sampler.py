"""Sampler chains: every stage builds, same seed gives same tokens, grammars constrain."""

from __future__ import annotations

import pytest

from pyllama import Batch, Context, Sampler, SamplingError


def generate(model, sampler: Sampler, prompt: str = "hello world", n: int = 24) -> list[int]:
    tokens = model.tokenize(prompt)
    out = []
    with Context(model, n_ctx=256, n_threads=2) as ctx:
        ctx.decode(Batch.of(tokens))
        pos = len(tokens)
        for _ in range(n):
            token = sampler.sample(ctx)
            out.append(token)
            ctx.decode(Batch.of([token], start_pos=pos))
            pos += 1
    return out


def full_chain(model, seed: int) -> Sampler:
    return (Sampler().penalties(model, 64, 1.1, 0.1, 0.1).dry(model).logit_bias(model, {5: -1.0})
            .top_k(40).typical(0.95).top_p(0.95).min_p(0.05).xtc(0.1, 0.2, seed=seed).top_n_sigma(3.0)
            .temp(0.9, delta=0.2).dist(seed))


def test_every_stage_builds_and_runs(model):
    chain = full_chain(model, 7)
    assert chain.stages == ["penalties", "dry", "logit_bias", "top_k", "typical", "top_p", "min_p", "xtc",
                            "top_n_sigma", "temp_ext", "dist"]
    assert len(chain) == 11
    assert len(generate(model, chain, n=8)) == 8
    for other in (Sampler().temp(0.8).mirostat(model, seed=1), Sampler().temp(0.8).mirostat_v2(seed=1),
                  Sampler().infill(model).greedy(), Sampler().temp(0.7).dist(3),
                  Sampler().min_p(0.05).adaptive_p(0.3, seed=2)):
        assert all(0 <= t < model.vocab.n_tokens for t in generate(model, other, n=4))


def test_same_seed_same_tokens(model):
    first = generate(model, full_chain(model, 1234))
    assert generate(model, full_chain(model, 1234)) == first
    assert generate(model, Sampler().temp(1.5).dist(99)) != generate(model, Sampler().temp(1.5).dist(100))


def test_greedy_is_argmax(model):
    tokens = model.tokenize("the solar system")
    with Context(model, n_ctx=128) as ctx:
        ctx.decode(Batch.of(tokens))
        assert Sampler().greedy().sample(ctx) == int(ctx.logits().argmax())


def test_logit_bias_forces_a_token(model):
    assert set(generate(model, Sampler().logit_bias(model, {300: 100.0}).greedy(), n=5)) == {300}
    with pytest.raises(ValueError, match="outside the vocabulary"):
        Sampler().logit_bias(model, {10**6: 1.0})


def test_grammar_constrains_output(model):
    digits = Sampler().grammar(model, 'root ::= [0-9]+ " " [a-z]+').temp(1.0).dist(5)
    text = model.detokenize(generate(model, digits, n=12))
    head, _, tail = text.partition(" ")
    assert head.isdigit() and (tail == "" or tail.isalpha())


def test_invalid_grammar_raises(model):
    with pytest.raises(ValueError, match="grammar"):
        Sampler().grammar(model, "root ::= (")


def test_a_grammar_that_throws_in_llama_cpp_raises_instead_of_ending_the_process(model):
    """llama.cpp's grammar throws a C++ exception ("Unexpected empty grammar stack") when it is
    handed a token it cannot accept; across the C boundary that would abort Python."""
    only_a = Sampler().grammar(model, 'root ::= "a"').greedy()
    with pytest.raises(SamplingError, match="empty grammar stack"):
        only_a.accept(model.tokenize("z", add_special=False)[0])


def test_an_invalid_trigger_pattern_raises(model):
    with pytest.raises(ValueError, match="grammar_lazy"):
        Sampler().grammar_lazy(model, 'root ::= "a"', trigger_patterns=["(unclosed"])


def test_lazy_grammar_builds(model):
    sampler = Sampler().grammar_lazy(model, 'root ::= "{" [a-z]* "}"', trigger_patterns=["\\{"]).greedy()
    assert len(generate(model, sampler, n=4)) == 4


def test_clone_and_reset(model):
    original = Sampler().temp(1.0).dist(42)
    twin = original.clone()
    assert generate(model, original, n=6) == generate(model, twin, n=6)
    assert twin.stages == original.stages
    original.close()
    with pytest.raises(Exception):
        original.reset()


def test_sample_without_logits_raises(model):
    with Context(model, n_ctx=128) as ctx:
        ctx.decode(Batch.of(model.tokenize("hello"), output=False))
        with pytest.raises(IndexError):
            Sampler().greedy().sample(ctx)
