"""``pyllama complete -m MODEL -p PROMPT -n N``: one completion, streamed, then the timings."""

from __future__ import annotations

import argparse
import sys

from . import _options


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("complete", help="complete a prompt once and print the timings")
    _options.add_model(parser, demo=True)
    _options.add_sampling(parser)
    _options.add_prompt(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..llama import Llama

    prompt = _options.prompt_of(args)
    with Llama(_options.model_of(args), **_options.llama_kwargs(args)) as llm:
        sys.stdout.write(prompt)
        for chunk in llm(prompt, max_tokens=args.n_predict, stream=True, **_options.sampling_kwargs(args, llm)):
            sys.stdout.write(chunk["choices"][0]["text"])
            sys.stdout.flush()
        sys.stdout.write("\n")
        print(llm.timings(), file=sys.stderr)
    return 0
