"""``pyllama bench -m MODEL [-p 512] [-n 128] [-r 5] [-o {md,json,csv}]``: pp/tg throughput like llama-bench."""

from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
import time

import numpy as np

from . import _options


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("bench", help="prompt processing and generation speed, like llama-bench")
    parser.add_argument("-m", "--model", required=True)
    parser.add_argument("-p", "--n-prompt", dest="n_prompt", type=_options.at_least(0), default=512)
    parser.add_argument("-n", "--n-gen", dest="n_gen", type=_options.at_least(0), default=128)
    parser.add_argument("-t", "--threads", dest="n_threads", type=int, default=None,
                        help="CPU threads (default: the CPUs available)")
    parser.add_argument("-ngl", "--n-gpu-layers", dest="n_gpu_layers", type=int, default=0)
    parser.add_argument("-b", "--batch-size", dest="n_batch", type=_options.at_least(1), default=2048)
    parser.add_argument("-r", "--repetitions", type=_options.at_least(1), default=5)
    parser.add_argument("-o", "--output", choices=("md", "json", "csv"), default="md")
    parser.set_defaults(run=run)


def _rates(ctx, model, kind: str, n: int, repetitions: int, n_batch: int) -> list[float]:
    from ..batch import Batch

    rng = np.random.default_rng(0)
    rates = []
    for repetition in range(repetitions + 1):  # the first run warms up
        tokens = rng.integers(0, model.vocab.n_tokens, n, dtype=np.int32)
        ctx.kv_clear()
        start = time.perf_counter()
        if kind == "pp":
            for begin in range(0, n, n_batch):
                ctx.decode(Batch.of(tokens[begin:begin + n_batch], start_pos=begin))
        else:
            step = Batch(1)
            for pos in range(n):
                step.clear()
                step.add(int(tokens[pos]), pos, (0,), True)
                ctx.decode(step)
        if repetition:
            rates.append(n / (time.perf_counter() - start))
    return rates


def run(args: argparse.Namespace) -> int:
    from ..context import Context
    from ..model import Model
    from ..system import system_info

    rows = []
    with Model(args.model, n_gpu_layers=args.n_gpu_layers) as model:
        tests = [("pp", args.n_prompt)] if args.n_prompt > 0 else []
        tests += [("tg", args.n_gen)] if args.n_gen > 0 else []
        for kind, n in tests:
            n_threads = _options.threads(args.n_threads)
            with Context(model, n_ctx=n, n_batch=min(args.n_batch, n), n_ubatch=min(512, n),
                         n_threads=n_threads, n_threads_batch=n_threads) as ctx:
                rates = _rates(ctx, model, kind, n, args.repetitions, min(args.n_batch, n))
                threads = ctx.n_threads[1 if kind == "pp" else 0]
            rows.append({"model": model.description, "size_mib": round(model.size / 2**20, 2),
                         "params_m": round(model.n_params / 1e6, 2), "backends": ",".join(system_info().backends),
                         "threads": threads, "test": f"{kind}{n}", "avg_ts": statistics.mean(rates),
                         "stddev_ts": statistics.stdev(rates) if len(rates) > 1 else 0.0})
    if args.output == "json":
        print(json.dumps(rows, indent=2))
    elif args.output == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        print(out.getvalue(), end="")
    else:
        print("| model | size | params | backend | threads | test | t/s |")
        print("| --- | ---: | ---: | --- | ---: | ---: | ---: |")
        for r in rows:
            print(f"| {r['model']} | {r['size_mib']:.2f} MiB | {r['params_m']:.2f} M | {r['backends']} | "
                  f"{r['threads']} | {r['test']} | {r['avg_ts']:.2f} ± {r['stddev_ts']:.2f} |")
    return 0
