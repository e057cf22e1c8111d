"""Shared fixtures: paths of the source tree and the tiny models tests generate."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LLAMA_CPP = REPO / "vendor" / "llama.cpp"


def without_gpu_warning(stderr: str) -> str:
    """stderr less the GPUUnavailableWarning (its line and the source line after it) that a GPU
    build prints, by design, on a machine without a usable GPU."""
    kept, skip_source = [], False
    for line in stderr.splitlines(keepends=True):
        if "GPUUnavailableWarning: " in line:
            skip_source = True
        elif not (skip_source and line.startswith("  ")):
            kept.append(line)
            skip_source = False
    return "".join(kept)


@pytest.fixture(scope="session", autouse=True)
def empty_model_cache(tmp_path_factory):
    """Servers in router mode list the Hugging Face cache's models: the tests' cache is their own,
    empty, whatever the machine's holds."""
    import os

    before = os.environ.get("LLAMA_CACHE")
    os.environ["LLAMA_CACHE"] = str(tmp_path_factory.mktemp("hf-cache"))
    yield
    if before is None:
        del os.environ["LLAMA_CACHE"]
    else:
        os.environ["LLAMA_CACHE"] = before


@pytest.fixture(scope="session")
def llama_cpp_dir() -> Path:
    if not (LLAMA_CPP / "include" / "llama.h").exists():
        pytest.fail(f"{LLAMA_CPP} is not materialized; install the package from this checkout first")
    return LLAMA_CPP


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_spm(models_dir):
    """(path, weights) of a tiny llama with a sentencepiece-style vocab."""
    from models import write_llama

    path = models_dir / "tiny-spm.gguf"
    return path, write_llama(path, "spm", seed=1)


@pytest.fixture(scope="session")
def tiny_bpe(models_dir):
    from models import write_llama

    path = models_dir / "tiny-bpe.gguf"
    return path, write_llama(path, "bpe", seed=2)


@pytest.fixture(scope="session")
def tiny_moe(models_dir):
    """Path of a tiny Mixtral-style llama (4 experts, 2 used per token, 3 layers): placement tests."""
    from models import Shape, write_llama

    path = models_dir / "tiny-moe.gguf"
    write_llama(path, "spm", shape=Shape(n_layer=3), seed=7, n_expert=4, n_expert_used=2)
    return path


@pytest.fixture(scope="session")
def model(tiny_spm):
    import pyllama

    with pyllama.Model(tiny_spm[0]) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def tiny_bert(models_dir):
    """(path, weights) of a tiny BERT embedding model with a WordPiece vocab."""
    from models import write_bert

    path = models_dir / "tiny-bert.gguf"
    return path, write_bert(path, seed=3)


@pytest.fixture(scope="session")
def tiny_multimodal(models_dir):
    """(text model, vision mmproj, audio mmproj): a tiny random Gemma 3 vision model converted from
    transformers, and a Qwen2-Audio projector its text model can read too (tests/media_models.py)."""
    from media_models import write_tiny_multimodal

    return write_tiny_multimodal(models_dir / "tiny-multimodal")


@pytest.fixture(scope="session")
def tiny_vision(tiny_multimodal):
    """(text model, mmproj) of the tiny Gemma 3 vision model."""
    return tiny_multimodal[:2]
