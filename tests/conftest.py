"""Shared fixtures: paths of the source tree and the tiny models tests generate."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LLAMA_CPP = REPO / "vendor" / "llama.cpp"


@pytest.fixture(scope="session")
def llama_cpp_dir() -> Path:
    if not (LLAMA_CPP / "include" / "llama.h").exists():
        pytest.fail(f"{LLAMA_CPP} is not materialized; install the package from this checkout first")
    return LLAMA_CPP
