"""The README's examples/simple.py runs and matches a hand-rolled greedy loop over numpy logits."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from conftest import REPO
from pyllama import Batch, Context, Model


def test_simple_example_generates_the_greedy_continuation(tiny_spm):
    path = tiny_spm[0]
    result = subprocess.run([sys.executable, str(REPO / "examples" / "simple.py"), "-m", str(path), "-n", "12",
                             "hello world"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "eval time" in result.stderr

    with Model(path) as model, Context(model, n_ctx=64) as ctx:
        tokens = model.tokenize("hello world")
        ctx.decode(Batch.of(tokens))
        expected = b""
        for pos in range(len(tokens), len(tokens) + 12):
            token = int(np.argmax(ctx.logits()))
            if model.vocab.is_eog(token):
                break
            expected += model.token_to_piece(token)
            ctx.decode(Batch.of([token], start_pos=pos))
    assert result.stdout.rstrip("\n") == "hello world" + expected.decode("utf-8", "replace")
