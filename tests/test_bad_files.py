"""Hundreds of truncated and bit-flipped copies of a model: each loads or raises, none crashes."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap

import pytest

LOADER = textwrap.dedent("""
    import sys
    import pyllama
    for path in sys.argv[1:]:
        print("loading", path, flush=True)
        try:
            with pyllama.Model(path) as model, pyllama.Context(model, n_ctx=64) as ctx:
                ctx.decode(pyllama.Batch.of(model.tokenize("hello")))
            print("loaded", path, flush=True)
        except (pyllama.LlamaError, FileNotFoundError) as exc:
            print("refused", path, type(exc).__name__, str(exc).replace(chr(10), " "), flush=True)
""")


def mutants(source: bytes, directory, count: int, seed: int = 0):
    rng = random.Random(seed)
    header_end = source.index(b"blk.1.ffn_down.weight") + 64  # the tensor table ends near here
    paths = []
    for i in range(count):
        data = bytearray(source)
        kind = i % 3
        if kind == 0:  # truncated anywhere
            data = data[: rng.randrange(0, len(source))]
        elif kind == 1:  # a few bits flipped in the header, KV section or tensor table
            for _ in range(rng.randint(1, 4)):
                position = rng.randrange(0, header_end)
                data[position] ^= 1 << rng.randrange(8)
        else:  # a whole byte replaced in the header with an extreme value
            position = rng.randrange(0, header_end)
            data[position] = rng.choice([0x00, 0xFF, 0x7F, 0x80])
        path = directory / f"mutant-{i:03d}.gguf"
        path.write_bytes(bytes(data))
        paths.append(path)
    return paths


@pytest.mark.parametrize("seed", [0, 1])
def test_corrupt_models_never_crash_the_process(tiny_spm, tmp_path, seed):
    paths = mutants(tiny_spm[0].read_bytes(), tmp_path, 150, seed)
    result = subprocess.run([sys.executable, "-c", LOADER, *map(str, paths)], capture_output=True, text=True,
                            timeout=600)
    lines = result.stdout.splitlines()
    assert result.returncode == 0, f"crashed (code {result.returncode}) on: {lines[-1] if lines else '?'}\n{result.stderr[-2000:]}"
    outcomes = [line.split()[0] for line in lines if line.startswith(("loaded", "refused"))]
    assert len(outcomes) == len(paths)
    refused = [line for line in lines if line.startswith("refused")]
    assert len(refused) >= len(paths) // 3  # at least every truncated copy is refused
    for line in refused:
        assert ".gguf" in line  # the message names the file
    assert all(line.startswith(("loading", "loaded", "refused")) for line in lines), "messages stay on one line"


def test_truncated_file_names_the_problem(tiny_spm, tmp_path):
    import pyllama

    path = tmp_path / "half.gguf"
    data = tiny_spm[0].read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(pyllama.ModelLoadError, match="truncated"):
        pyllama.Model(path)
