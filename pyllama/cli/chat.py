"""``pyllama chat``: interactive generation like llama.cpp's ``main -i``.

Text mode (default): the prompt (``-p``/``-f``) is continued; when the output shows a reverse
prompt (``-r "User:"``) or ``-n`` tokens are done, it is your turn, and what you type is
appended; a prompt that already ends with a reverse prompt gives you the turn at once, as in
llama.cpp. ``-ins`` instead chats through the model's chat template. Ctrl-C stops the
current reply and gives you the turn; Ctrl-C or Ctrl-D at your turn ends the program.
"""

from __future__ import annotations

import argparse
import sys

from . import _options

COLOR_USER, COLOR_RESET = "\033[32m", "\033[0m"


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("chat", help="interactive chat or text continuation (like main -i)")
    _options.add_model(parser, demo=True)
    _options.add_sampling(parser)
    _options.add_prompt(parser, "the initial prompt")
    parser.add_argument("-i", "--interactive", action="store_true", help="(always interactive; kept for main's flags)")
    parser.add_argument("-r", "--reverse-prompt", action="append", default=[], help="give the turn back at this text")
    parser.add_argument("--keep", type=int, default=0, help="tokens of the prompt kept when the context shifts")
    parser.add_argument("--color", action="store_true", help="color your input")
    parser.add_argument("-ins", "--instruct", "-cnv", "--conversation", dest="instruct", action="store_true",
                        help="chat through the model's chat template")
    parser.add_argument("-sys", "--system-prompt", default=None)
    parser.set_defaults(run=run)


def _read(prompt: str, color: bool) -> str | None:
    try:
        if color:
            sys.stdout.write(COLOR_USER)
        line = input(prompt)
        return line
    except (EOFError, KeyboardInterrupt):
        return None
    finally:
        if color:
            sys.stdout.write(COLOR_RESET)
            sys.stdout.flush()


def _stream(pieces, newline: bool = True) -> str:
    """Print pieces as they come; Ctrl-C ends the reply, not the program."""
    shown = []
    try:
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
            shown.append(piece)
    except KeyboardInterrupt:
        sys.stdout.write(" [stopped]")
    finally:
        close = getattr(pieces, "close", None)
        if close:
            close()
    if newline:
        sys.stdout.write("\n")
    sys.stdout.flush()
    return "".join(shown)


def run(args: argparse.Namespace) -> int:
    from ..conversation import ChatSession
    from ..llama import Llama

    # -n -1: until the context ends, or with --keep (the context shifts) until Ctrl-C or a reverse prompt
    max_tokens = args.n_predict if args.n_predict > 0 else (2**31 - 1 if args.keep > 0 else None)
    with Llama(_options.model_of(args), context_shift_keep=args.keep, **_options.llama_kwargs(args)) as llm:
        sampling = _options.sampling_kwargs(args, llm)
        if args.instruct:
            session = ChatSession(llm, args.system_prompt or _options.prompt_of(args) or None,
                                  max_tokens=max_tokens or 512, anti_prompts=args.reverse_prompt, **sampling)
            while (line := _read("> ", args.color)) is not None:
                if line.strip():
                    _stream(session.stream(line))
            return 0
        prompt = _options.prompt_of(args)
        sys.stdout.write(prompt)
        sys.stdout.flush()
        tokens = llm.tokenize(prompt, add_bos=True, special=True)
        your_turn = ends_with_reverse_prompt(prompt, args.reverse_prompt)
        while True:
            if len(tokens) > 1 and not your_turn:
                tokens = _fit(tokens, llm.n_ctx(), args.keep)
                chunks = llm(tokens, max_tokens=max_tokens, stop=args.reverse_prompt, stream=True, **sampling)
                reply = _stream((c["choices"][0]["text"] for c in chunks), newline=False)
                tokens += llm.tokenize(reply, add_bos=False)
                if args.reverse_prompt:  # the stop string was cut from the reply; show it as main does
                    sys.stdout.write(args.reverse_prompt[0])
                    sys.stdout.flush()
                    tokens += llm.tokenize(args.reverse_prompt[0], add_bos=False)
            your_turn = False
            line = _read("", args.color)
            if line is None:
                return 0
            tokens += llm.tokenize(line + "\n", add_bos=False)


def ends_with_reverse_prompt(text: str, reverse_prompts: list[str]) -> bool:
    """llama.cpp's test for handing the turn to the user: the text ends exactly with a reverse
    prompt (a transcript that ends in "User:" waits for the user instead of inventing their line)."""
    return any(text.endswith(reverse) for reverse in reverse_prompts if reverse)


def _fit(tokens: list[int], n_ctx: int, keep: int) -> list[int]:
    """Keep the conversation inside the context: the first ``keep`` tokens and the recent half."""
    if len(tokens) < n_ctx - 16:
        return tokens
    return tokens[:max(keep, 1)] + tokens[-(n_ctx // 2):]
