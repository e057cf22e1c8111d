"""Token generation loop (Batch + decode + sample, one token at a time) against native llama-bench.

    python bench/generation_loop.py --llama-bench /path/to/llama-bench [--threads 2] [--tokens 128]

Uses random-weight llama models from bench/_models.py (tiny F32 and a larger Q8_0, 32k vocab),
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
import time
from pathlib import Path

from _models import model_file

import pyllama


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
    parser.add_argument("--models", nargs="+", default=["tiny-f32", "small-q8_0"])
    args = parser.parse_args()
    print(f"| model | pyllama loop t/s | llama-bench tg{args.tokens} t/s | ratio |")
    print("|---|---|---|---|")
    for name in args.models:
        path = model_file(name)
        ours, native = [], []
        for _ in range(args.rounds):
            ours.append(pyllama_tokens_per_s(path, args.tokens, args.threads, args.repetitions))
            native.append(native_tokens_per_s(args.llama_bench, path, args.tokens, args.threads, args.repetitions))
        ours, native = statistics.median(ours), statistics.median(native)
        print(f"| {name} | {ours:.1f} | {native:.1f} | {ours / native:.3f} |", flush=True)


if __name__ == "__main__":
    main()
