"""Prompt state caches: a prompt that starts like an earlier one skips the shared part."""

from __future__ import annotations

from pyllama import Llama
from pyllama import DiskCache, RAMCache

LONG = "Q: what are the planets of the solar system and what is the world? A: the planets are"


def complete(llm: Llama, prompt: str) -> str:
    return llm(prompt, max_tokens=6, temperature=0)["choices"][0]["text"]


def test_ram_cache_resumes_an_earlier_prompt(tiny_spm):
    with Llama(str(tiny_spm[0]), n_ctx=256) as plain:
        expected = complete(plain, LONG + " one")
    with Llama(str(tiny_spm[0]), n_ctx=256) as llm:
        llm.set_cache(RAMCache(capacity_bytes=64 << 20))
        complete(llm, LONG)
        complete(llm, "something unrelated")  # the context now holds other tokens
        assert complete(llm, LONG + " one") == expected
        n_new = len(llm.tokenize((LONG + " one").encode())) - len(llm.tokenize(LONG.encode()))
        assert llm.last_prompt_evaluated <= n_new + 1
        assert len(llm.cache) == 3


def test_ram_cache_capacity_drops_the_oldest(tiny_spm):
    with Llama(str(tiny_spm[0]), n_ctx=256) as llm:
        cache = RAMCache(capacity_bytes=1)
        llm.set_cache(cache)
        complete(llm, LONG)
        complete(llm, "hello world")
        assert len(cache) == 1


def test_disk_cache_survives_the_process(tiny_spm, tmp_path):
    with Llama(str(tiny_spm[0]), n_ctx=256) as plain:
        expected = complete(plain, LONG + " one")
    with Llama(str(tiny_spm[0]), n_ctx=256) as first:
        first.set_cache(DiskCache(tmp_path / "states"))
        complete(first, LONG)
    with Llama(str(tiny_spm[0]), n_ctx=256) as second:
        second.set_cache(DiskCache(tmp_path / "states"))
        assert complete(second, LONG + " one") == expected
        assert second.last_prompt_evaluated < len(second.tokenize(LONG.encode())) // 2
