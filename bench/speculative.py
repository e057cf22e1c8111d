"""Speculative decoding: acceptance rate and speedup over plain greedy decoding.

    python bench/speculative.py [--model 1b-q4_0] [--tokens 128] [--threads 2]

Random-weight models fall into loops under greedy decoding, so prompt lookup has something to
find; a draft model with the target's own weights agrees every time and shows the cost of
verification with a draft as expensive as the target. Output equality is checked each time.
"""

from __future__ import annotations

import argparse
import time

from _models import model_file

from pyllama import Llama, PromptLookupDecoding

PROMPT = "Q: Name the planets in the solar system? A: the planets are the planets are"


def timed(llm: Llama, tokens: int) -> tuple[str, float]:
    llm.reset()
    start = time.perf_counter()
    out = llm(PROMPT, max_tokens=tokens, temperature=0)
    return out["choices"][0]["text"], out["usage"]["completion_tokens"] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="1b-q4_0")
    parser.add_argument("--draft", default="tiny-f32")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    path = str(model_file(args.model))
    common = dict(n_ctx=args.tokens + 128, n_threads=args.threads, n_threads_batch=args.threads)
    with Llama(path, **common) as plain:
        timed(plain, 8)
        expected, base = timed(plain, args.tokens)
    print(f"| {args.model}, greedy, {args.tokens} tokens | t/s | speedup | acceptance |")
    print("|---|---|---|---|")
    print(f"| plain | {base:.1f} | 1.00x | - |")
    drafters = {
        "prompt lookup (n-gram 2, 10 tokens)": PromptLookupDecoding(max_ngram_size=2, num_pred_tokens=10),
        f"draft model {args.draft}": str(model_file(args.draft)),
        f"draft model = target ({args.model})": path,
    }
    for label, drafter in drafters.items():
        with Llama(path, draft_model=drafter, **common) as llm:
            timed(llm, 8)
            text, rate = timed(llm, args.tokens)
            assert text == expected, f"{label}: output differs from plain decoding"
            stats = llm.last_speculation
            print(f"| {label} | {rate:.1f} | {rate / base:.2f}x | {stats.acceptance_rate:.0%} "
                  f"({stats.accepted}/{stats.drafted}) |", flush=True)


if __name__ == "__main__":
    main()
