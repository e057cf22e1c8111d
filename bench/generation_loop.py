"""Token generation loop (Batch + decode + sample, one token at a time) against native llama-bench.

    python bench/generation_loop.py --llama-bench /path/to/llama-bench [--threads 2] [--tokens 128]

Builds random-weight llama models with the test suite's generator (tiny F32 and a larger Q8_0),
times pyllama's loop and `llama-bench -p 0 -n N` on the same file and threads in the same run,
and prints tokens/s and the ratio. The two alternate for several rounds and the medians are
compared, because a shared 2-core machine drifts by 10-20% between runs. llama-bench decodes
without sampling; the pyllama loop also samples (greedy) every token, so the ratio includes that.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from models import Shape, write_llama  # noqa: E402

import pyllama  # noqa: E402
from pyllama._ffi import ffi, lib  # noqa: E402

MODELS = {
    "tiny-f32 (64 x 2 layers)": (Shape(), None),
    "small-q8_0 (512 x 8 layers)": (Shape(n_embd=512, n_head=8, n_head_kv=4, n_layer=8, n_ff=1536), lib.LLAMA_FTYPE_MOSTLY_Q8_0),
}


def build(directory: Path, name: str, shape: Shape, ftype: int | None) -> Path:
    path = directory / (name.split()[0] + ".gguf")
    write_llama(path, "spm", shape=shape, seed=0)
    if ftype is None:
        return path
    params = ffi.new("llama_model_quantize_params *", lib.llama_model_quantize_default_params())
    params.ftype = ftype
    quantized = path.with_suffix(".q.gguf")
    if lib.llama_model_quantize(str(path).encode(), str(quantized).encode(), params) != 0:
        raise RuntimeError(f"quantizing {path} failed")
    return quantized


def pyllama_tokens_per_s(path: Path, n_tokens: int, threads: int, repetitions: int) -> float:
    with pyllama.Model(path) as model, \
            pyllama.Context(model, n_ctx=n_tokens, n_threads=threads, n_threads_batch=threads) as ctx, \
            pyllama.Sampler().greedy() as sampler:
        batch = pyllama.Batch(1)
        rates = []
        for repetition in range(repetitions + 1):  # the first run warms up
            ctx.kv_clear()
            token = model.vocab.bos
            start = time.perf_counter()
            for pos in range(n_tokens):
                batch.clear()
                batch.add(token, pos, output=True)
                ctx.decode(batch)
                token = sampler.sample(ctx)
            if repetition:
                rates.append(n_tokens / (time.perf_counter() - start))
        return statistics.mean(rates)


def native_tokens_per_s(llama_bench: str, path: Path, n_tokens: int, threads: int, repetitions: int) -> float:
    out = subprocess.run([llama_bench, "-m", str(path), "-p", "0", "-n", str(n_tokens), "-t", str(threads),
                          "-r", str(repetitions), "-o", "json"], capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]["avg_ts"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llama-bench", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repetitions", type=int, default=3, help="runs per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"| model | pyllama loop t/s | llama-bench tg{args.tokens} t/s | ratio |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (shape, ftype) in MODELS.items():
            path = build(Path(tmp), name, shape, ftype)
            ours, native = [], []
            for _ in range(args.rounds):
                ours.append(pyllama_tokens_per_s(path, args.tokens, args.threads, args.repetitions))
                native.append(native_tokens_per_s(args.llama_bench, path, args.tokens, args.threads, args.repetitions))
            ours, native = statistics.median(ours), statistics.median(native)
            print(f"| {name} | {ours:.1f} | {native:.1f} | {ours / native:.3f} |", flush=True)


if __name__ == "__main__":
    main()
