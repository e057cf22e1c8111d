"""``pyllama speculative -m BIG -md DRAFT -p PROMPT -n N``: speculative decoding with acceptance stats."""

from __future__ import annotations

import argparse
import sys
import time

from . import _options


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("speculative", help="generate with a draft model and report acceptance")
    _options.add_model(parser, ctx=4096)
    _options.add_sampling(parser)
    parser.add_argument("-md", "--model-draft", dest="draft", required=True, help="draft GGUF (same vocabulary)")
    parser.add_argument("--draft", dest="n_draft", type=int, default=8, help="tokens to draft per step")
    _options.add_prompt(parser)
    parser.add_argument("-e", "--escape", action="store_true", help="process escapes (\\n) in the prompt")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..llama import Llama
    from ..generation.speculative import DraftModel

    prompt = _options.prompt_of(args)
    if args.escape:
        prompt = prompt.encode("utf-8").decode("unicode_escape")
    drafter = DraftModel(args.draft, num_pred_tokens=args.n_draft, n_ctx=args.n_ctx,
                         n_threads=_options.threads(args.n_threads))
    with Llama(args.model, draft_model=drafter, **_options.llama_kwargs(args)) as llm:
        start = time.perf_counter()
        out = llm(prompt, max_tokens=args.n_predict, **_options.sampling_kwargs(args, llm))
        elapsed = time.perf_counter() - start
        print(prompt + out["choices"][0]["text"])
        stats, n = llm.last_speculation, out["usage"]["completion_tokens"]
        print(f"\ndrafted {stats.drafted}, accepted {stats.accepted} ({stats.acceptance_rate:.1%}); "
              f"{n} tokens in {elapsed:.2f} s ({n / elapsed:.1f} tokens/s)", file=sys.stderr)
    return 0
