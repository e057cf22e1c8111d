"""create_completion, greedy, N tokens: pyllama vs llama-cpp-python 0.3.36 vs native llama-bench.

    python bench/completion.py --llama-cpp-python /venv/bin/python --llama-bench /path/to/llama-bench \
        [--models tiny-f32 1b-q4_0] [--tokens 256] [--threads 2]

The same script runs under both bindings (their Llama APIs are the same), each in its own
interpreter, alternating for several rounds; medians are compared. Both get n_ctx = N + 64, and
llama-bench runs ``-n N -d 64`` so its context is as large and already holds tokens; the timed
call includes its short prompt, which llama-bench's tgN does not, so native is a slight overestimate.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from _models import model_file

CALLER = """
import json, sys, time
from {module} import Llama
path, threads, n, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
llm = Llama(model_path=path, n_ctx=n + 64, n_batch=512, n_threads=threads, n_threads_batch=threads, seed=1,
            verbose=False)
prompt = "Q: Name the planets in the solar system? A: "
llm(prompt, max_tokens=8, temperature=0)
rates, counts = [], []
for _ in range(reps):
    llm.reset()
    start = time.perf_counter()
    out = llm(prompt, max_tokens=n, temperature=0)
    elapsed = time.perf_counter() - start
    counts.append(out["usage"]["completion_tokens"])
    rates.append(counts[-1] / elapsed)
print(json.dumps({{"rate": sum(rates) / len(rates), "tokens": counts}}))
"""


def run_binding(python: str, module: str, path, threads: int, tokens: int, reps: int) -> dict:
    out = subprocess.run([python, "-c", CALLER.format(module=module), str(path), str(threads), str(tokens), str(reps)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_native(llama_bench: str, path, threads: int, tokens: int, reps: int) -> float:
    out = subprocess.run([llama_bench, "-m", str(path), "-p", "0", "-n", str(tokens), "-d", "64", "-t", str(threads),
                          "-r", str(reps), "-o", "json"], capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]["avg_ts"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llama-cpp-python", required=True, help="python of a venv with llama-cpp-python 0.3.36")
    parser.add_argument("--llama-bench", required=True)
    parser.add_argument("--models", nargs="+", default=["tiny-f32", "1b-q4_0"])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repetitions", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"| model | pyllama t/s | llama-cpp-python t/s | llama-bench tg{args.tokens} t/s | "
          "vs llama-cpp-python | vs native |")
    print("|---|---|---|---|---|---|")
    for name in args.models:
        path = model_file(name)
        ours, theirs, native = [], [], []
        for _ in range(args.rounds):
            mine = run_binding(sys.executable, "pyllama", path, args.threads, args.tokens, args.repetitions)
            other = run_binding(args.llama_cpp_python, "llama_cpp", path, args.threads, args.tokens, args.repetitions)
            if mine["tokens"] != other["tokens"]:
                raise RuntimeError(f"the bindings generated different lengths: {mine['tokens']} vs {other['tokens']}")
            ours.append(mine["rate"])
            theirs.append(other["rate"])
            native.append(run_native(args.llama_bench, path, args.threads, args.tokens, args.repetitions))
        a, b, c = statistics.median(ours), statistics.median(theirs), statistics.median(native)
        print(f"| {name} ({mine['tokens'][0]} tokens) | {a:.1f} | {b:.1f} | {c:.1f} | {a / b:.2f}x | {a / c:.3f} |",
              flush=True)


if __name__ == "__main__":
    main()
