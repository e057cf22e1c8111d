"""``pyllama chat``: interactive generation like llama.cpp's ``main -i``.

Text mode (default): the prompt (``-p``/``-f``) is continued; when the output shows a reverse
prompt (``-r "User:"``) or ``-n`` tokens are done, it is your turn, at a ``>`` prompt, and what
you type is appended; a prompt that already ends with a reverse prompt gives you the turn at
once, as in llama.cpp. ``-cnv`` instead chats through the model's chat template, dropping the
oldest turns when the context fills. Ctrl-C stops the current reply and gives you the turn;
Ctrl-C or Ctrl-D at your turn ends the program.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _options

if TYPE_CHECKING:
    from ..llama import Llama

COLOR_USER, COLOR_RESET = "\033[32m", "\033[0m"
PROMPT = "> "
REPLY_TOKENS = 256  # -n's default: a reply of a few paragraphs, then the turn comes back
CONTEXT = 4096  # -c's default: room for a conversation of several turns


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("chat", help="interactive chat or text continuation (like main -i)")
    _options.add_model(parser, ctx=CONTEXT, demo=True)
    _options.add_sampling(parser, n_predict=REPLY_TOKENS)
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


def _stream(pieces: Iterable[str], newline: bool = True) -> str:
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


def _banner(args: argparse.Namespace, model: str, llm: Llama) -> str:
    """What a newcomer needs first: what this mode does and which keys do what."""
    keys = "Ctrl-C stops a reply, Ctrl-D quits."
    name = Path(model).name
    if not args.instruct:
        return (f"pyllama chat: {name} continues what you write (-cnv chats through its chat template instead). "
                f"Type at the > prompt, Enter gives the model the turn (an empty line lets it go on); {keys}")
    lines = [f"pyllama chat: chatting with {name} through its chat template. {keys}"]
    fallback = llm.chat_template.fallback
    if fallback is not None:
        lines.append(f"note: {fallback.note}. A base model continues text better than it chats: leave out -cnv.")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..llama import Llama

    model = _options.model_of(args)
    with Llama(model, context_shift_keep=args.keep, **_options.llama_kwargs(args)) as llm:
        print(_banner(args, model, llm), file=sys.stderr, flush=True)
        sampling = _options.sampling_kwargs(args, llm)
        if args.instruct:
            return _conversation(args, llm, sampling)
        return _continuation(args, llm, sampling)


def _conversation(args: argparse.Namespace, llm: Llama, sampling: dict[str, Any]) -> int:
    """-cnv: turns through the chat template; the oldest turns make room when the context fills."""
    from ..conversation import ChatSession
    from ..errors import ContextOverflowError

    n_ctx = llm.n_ctx()
    # a reply may take at most half the context, so the defaults always leave room for the conversation
    reply = min(args.n_predict, n_ctx // 2) if args.n_predict > 0 else n_ctx // 2
    session = ChatSession(llm, args.system_prompt or _options.prompt_of(args) or None, max_tokens=reply,
                          anti_prompts=args.reverse_prompt, **sampling)
    while (line := _read(PROMPT, args.color)) is not None:
        if not line.strip():
            continue
        try:
            _stream(session.stream(line))
        except ContextOverflowError as exc:  # this one message is too long: say so, the conversation goes on
            print(f"pyllama chat: {exc}; write less, or start with a larger -c", file=sys.stderr, flush=True)
    return 0


def _continuation(args: argparse.Namespace, llm: Llama, sampling: dict[str, Any]) -> int:
    """Text mode: the model continues the text; your lines join it."""
    # -n -1: until the context ends, or with --keep (the context shifts) until Ctrl-C or a reverse prompt
    max_tokens = args.n_predict if args.n_predict > 0 else (2**31 - 1 if args.keep > 0 else None)
    prompt = _options.prompt_of(args)
    sys.stdout.write(prompt)
    sys.stdout.flush()
    text = prompt
    tokens = llm.tokenize(prompt, add_bos=True, special=True)
    your_turn = ends_with_reverse_prompt(prompt, args.reverse_prompt)
    while True:
        if len(tokens) > 1 and not your_turn:
            tokens = _fit(tokens, llm.n_ctx(), args.keep, max_tokens)
            chunks = llm(tokens, max_tokens=max_tokens, stop=args.reverse_prompt, stream=True, **sampling)
            reply = _stream((c["choices"][0]["text"] for c in chunks), newline=False)
            text += reply
            tokens += llm.tokenize(reply, add_bos=False)
            if args.reverse_prompt:  # the stop string was cut from the reply; show it as main does
                sys.stdout.write(args.reverse_prompt[0])
                sys.stdout.flush()
                text += args.reverse_prompt[0]
                tokens += llm.tokenize(args.reverse_prompt[0], add_bos=False)
        your_turn = False
        at_reverse_prompt = ends_with_reverse_prompt(text, args.reverse_prompt)
        if not at_reverse_prompt and text and not text.endswith("\n"):
            sys.stdout.write("\n")  # your text starts on a line of its own, never glued to the model's
        line = _read("" if at_reverse_prompt else PROMPT, args.color)
        if line is None:
            return 0
        addition = joined(text, line, at_reverse_prompt)
        text += addition
        tokens += llm.tokenize(addition, add_bos=False)


def joined(text: str, line: str, at_reverse_prompt: bool) -> str:
    """What a typed line adds to the text. After a reverse prompt ("User:") it is that turn's
    line, ended by a newline as in llama.cpp; otherwise it continues the text on a new line and
    the model goes on from its end (an empty line adds nothing: the model just goes on)."""
    if at_reverse_prompt:
        return line + "\n"
    if not line:
        return ""
    return line if not text or text.endswith(("\n", " ")) else "\n" + line


def ends_with_reverse_prompt(text: str, reverse_prompts: list[str]) -> bool:
    """llama.cpp's test for handing the turn to the user: the text ends exactly with a reverse
    prompt (a transcript that ends in "User:" waits for the user instead of inventing their line)."""
    return any(text.endswith(reverse) for reverse in reverse_prompts if reverse)


def _fit(tokens: list[int], n_ctx: int, keep: int, reply: int | None) -> list[int]:
    """Keep the text inside the context with room for a reply (up to half the context): the
    first ``keep`` tokens and the recent half."""
    room, kept = min(reply or n_ctx, n_ctx // 2), max(keep, 1)
    if len(tokens) + room <= n_ctx:
        return tokens
    return tokens[:kept] + tokens[-max(n_ctx // 2 - kept, 1):]
