"""Per-call overhead of a trivial binding call: pyllama (cffi) against llama-cpp-python (ctypes).

    python bench/call_overhead.py MODEL.gguf --llama-cpp-python /path/to/venv/bin/python

Each implementation runs in its own interpreter (llama-cpp-python lives in its own venv)
and times ``llama_vocab_n_tokens(vocab)`` through its low-level binding, plus the same
question through its high-level object. Prints ns per call and the ratios.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap

N = 1_000_000

PYLLAMA = textwrap.dedent("""
    import json, sys, timeit
    import pyllama
    from pyllama._binding import lib
    model = pyllama.Model(sys.argv[1], vocab_only=True)
    vocab = lib.llama_model_get_vocab(model._ptr)
    f = lib.llama_vocab_n_tokens
    low = min(timeit.repeat(lambda: f(vocab), number={n}, repeat=5)) / {n} * 1e9
    high = min(timeit.repeat(lambda: model.vocab.n_tokens, number={n} // 10, repeat=5)) / ({n} // 10) * 1e9
    print(json.dumps({{"low_level_ns": low, "high_level_ns": high}}))
""").format(n=N)

LLAMA_CPP_PYTHON = textwrap.dedent("""
    import json, sys, timeit
    import llama_cpp
    llm = llama_cpp.Llama(sys.argv[1], vocab_only=True, verbose=False)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    f = llama_cpp.llama_vocab_n_tokens
    low = min(timeit.repeat(lambda: f(vocab), number={n}, repeat=5)) / {n} * 1e9
    high = min(timeit.repeat(lambda: llm.n_vocab(), number={n} // 10, repeat=5)) / ({n} // 10) * 1e9
    print(json.dumps({{"low_level_ns": low, "high_level_ns": high}}))
""").format(n=N)


def measure(python: str, code: str, model: str) -> dict[str, float]:
    out = subprocess.run([python, "-c", code, model], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--llama-cpp-python", required=True, help="python of a venv with llama-cpp-python")
    args = parser.parse_args()
    ours = measure(sys.executable, PYLLAMA, args.model)
    theirs = measure(args.llama_cpp_python, LLAMA_CPP_PYTHON, args.model)
    print("| call | pyllama (cffi) | llama-cpp-python 0.3.36 (ctypes) | speedup |")
    print("|---|---|---|---|")
    for key, label in (("low_level_ns", "llama_vocab_n_tokens(vocab)"),
                       ("high_level_ns", "model.vocab.n_tokens / Llama.n_vocab()")):
        print(f"| {label} | {ours[key]:.0f} ns | {theirs[key]:.0f} ns | {theirs[key] / ours[key]:.1f}x |")


if __name__ == "__main__":
    main()
