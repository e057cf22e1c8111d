"""What a request samples with: its sampling fields, logit bias and grammar, turned into the
:class:`SamplingParams` of its jobs, and llama-server's reports of those settings.

A field the request leaves out (or sends as null) gets the server's setting (``--temp``,
``-s``) or SamplingParams' default. Two settings have two names, llama-server's and
llama-cpp-python's (``repeat_last_n`` / ``penalty_last_n``, ``mirostat`` / ``mirostat_mode``);
a request that sends both gets llama-cpp-python's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, TypeVar

from ..chat import schema_to_gbnf
from ..chat.plan import response_grammar
from ..errors import SchemaError
from ..generation.generator import Request
from ..generation.params import SamplingParams
from ..vocab import Vocab
from .errors import RequestError
from .grammar_limits import grammar_problem
from .schemas.common import GenerationFields
from .settings import Settings

_DEFAULT = SamplingParams()
T = TypeVar("T")


def _given(value: T | None, default: T) -> T:
    return default if value is None else value


class Sampling:
    """How one served model's requests sample: with the server's ``--temp`` and ``-s`` as
    defaults, penalty windows no wider than its context, and its vocabulary for ``logit_bias``
    by text and for ``ignore_eos``."""

    def __init__(self, vocab: Vocab, n_ctx: int, temperature: float | None, seed: int | None) -> None:
        self.vocab, self.n_ctx = vocab, n_ctx
        self.temperature, self.seed = _given(temperature, _DEFAULT.temperature), seed
        self.eog_tokens = [t for t in range(vocab.n_tokens) if vocab.is_eog(t)]

    def params(self, body: GenerationFields, grammar: str | None, triggers: Sequence[str] = ()) -> SamplingParams:
        """The request's SamplingParams, field by field; a value SamplingParams refuses is a 400."""
        bias = self.logit_bias(body)
        if body.ignore_eos:  # as llama.cpp: the end-of-generation tokens can never be sampled
            bias.update(dict.fromkeys(self.eog_tokens, float("-inf")))
        breakers = body.dry_sequence_breakers
        try:
            return SamplingParams(
                temperature=_given(body.temperature, self.temperature),
                top_k=_given(body.top_k, _DEFAULT.top_k),
                top_p=_given(body.top_p, _DEFAULT.top_p),
                min_p=_given(body.min_p, _DEFAULT.min_p),
                typical_p=_given(body.typical_p, _DEFAULT.typical_p),
                repeat_penalty=_given(body.repeat_penalty, _DEFAULT.repeat_penalty),
                frequency_penalty=_given(body.frequency_penalty, _DEFAULT.frequency_penalty),
                presence_penalty=_given(body.presence_penalty, _DEFAULT.presence_penalty),
                penalty_last_n=_given(self._window(_given(body.penalty_last_n, body.repeat_last_n)),
                                      _DEFAULT.penalty_last_n),
                mirostat_mode=_given(_given(body.mirostat_mode, body.mirostat), _DEFAULT.mirostat_mode),
                mirostat_tau=_given(body.mirostat_tau, _DEFAULT.mirostat_tau),
                mirostat_eta=_given(body.mirostat_eta, _DEFAULT.mirostat_eta),
                dynatemp_range=_given(body.dynatemp_range, _DEFAULT.dynatemp_range),
                dynatemp_exponent=_given(body.dynatemp_exponent, _DEFAULT.dynatemp_exponent),
                top_n_sigma=_given(body.top_n_sigma, _DEFAULT.top_n_sigma),
                xtc_probability=_given(body.xtc_probability, _DEFAULT.xtc_probability),
                xtc_threshold=_given(body.xtc_threshold, _DEFAULT.xtc_threshold),
                dry_multiplier=_given(body.dry_multiplier, _DEFAULT.dry_multiplier),
                dry_base=_given(body.dry_base, _DEFAULT.dry_base),
                dry_allowed_length=_given(body.dry_allowed_length, _DEFAULT.dry_allowed_length),
                dry_penalty_last_n=_given(self._window(body.dry_penalty_last_n), _DEFAULT.dry_penalty_last_n),
                dry_sequence_breakers=_DEFAULT.dry_sequence_breakers if breakers is None else tuple(breakers),
                min_keep=_given(body.min_keep, _DEFAULT.min_keep),
                seed=_given(body.seed, self.seed),
                logit_bias=bias or None,
                grammar=grammar,
                grammar_triggers=tuple(triggers))
        except ValueError as exc:  # its message starts with the field's name
            raise RequestError(400, str(exc), str(exc).split(" ", 1)[0]) from exc

    def _window(self, last_n: int | None) -> int | None:
        # llama.cpp allocates a ring buffer of the window's size when the engine admits the job:
        # 2**31-1 froze every stream for a minute. A window wider than the context is the context.
        return None if last_n is None else min(last_n, self.n_ctx)

    def logit_bias(self, body: GenerationFields) -> dict[int, float]:
        """OpenAI's {"id": bias}, or llama.cpp's [[id or text, bias]] and text keys; false bans."""
        raw = body.logit_bias
        if not raw:
            return {}
        pairs = list(raw.items()) if isinstance(raw, dict) else [tuple(pair) for pair in raw]
        bias: dict[int, float] = {}
        for key, value in pairs:
            if value is True or isinstance(value, str):
                raise RequestError(400, f"'logit_bias': the bias for {key!r} must be a number or false", "logit_bias")
            amount = float("-inf") if value is False else float(value)
            if isinstance(key, str) and key.lstrip("-").isdigit():
                key = int(key)
            if isinstance(key, bool) or isinstance(key, float):
                raise RequestError(400, f"'logit_bias': {key!r} is not a token id or text", "logit_bias")
            ids = [key] if isinstance(key, int) else self.vocab.tokenize(key, add_special=False, parse_special=False)
            for token in ids:
                if not 0 <= token < self.vocab.n_tokens:
                    raise RequestError(400, f"'logit_bias': token ids must be in 0..{self.vocab.n_tokens - 1}, "
                                            f"got {token}", "logit_bias")
                bias[token] = amount
        return bias


# --- grammar -------------------------------------------------------------------------------------
def response_format(body: GenerationFields) -> dict[str, Any] | None:
    """The request's ``response_format`` as pyllama.chat reads it."""
    if body.response_format is None:
        return None
    return body.response_format.model_dump(exclude_none=True, by_alias=True)


def grammar_of(body: GenerationFields) -> str | None:
    """``json_schema`` (llama.cpp) or ``grammar``; a chat's response_format is planned with the chat."""
    if body.json_schema is not None:
        try:
            return schema_to_gbnf(body.json_schema)
        except SchemaError as exc:
            raise RequestError(400, f"'json_schema': {exc}", "json_schema") from exc
        except RecursionError as exc:  # the converter recurses once per level of the schema
            raise RequestError(400, "'json_schema' nests too deeply", "json_schema") from exc
    return body.grammar


def completion_grammar(body: GenerationFields) -> str | None:
    """The grammar a completion request asks for (response_format, json_schema or grammar)."""
    if body.response_format is not None and body.response_format.type != "text":
        try:
            return response_grammar(response_format(body))
        except ValueError as exc:
            raise RequestError(400, str(exc), "response_format") from exc
        except RecursionError as exc:
            raise RequestError(400, "'response_format' has a schema that nests too deeply", "response_format") from exc
    return grammar_of(body)


def check_grammar(grammar: str | None) -> None:
    """Refuse, before llama.cpp parses it, a grammar that would overflow its parser's stack
    (it is compiled, and refused if invalid, with the request's jobs)."""
    problem = grammar_problem(grammar) if grammar else None
    if problem is not None:
        raise RequestError(400, problem, "grammar")


# --- llama-server's reports ------------------------------------------------------------------------
def default_params(settings: Settings) -> dict[str, Any]:
    """What a request that sets nothing generates with (llama-server's /props)."""
    shown = {f.name: getattr(_DEFAULT, f.name) for f in dataclasses.fields(_DEFAULT)
             if f.name not in ("logit_bias", "grammar", "grammar_triggers")}
    shown["dry_sequence_breakers"] = list(_DEFAULT.dry_sequence_breakers)
    shown.update(temperature=_given(settings.temperature, _DEFAULT.temperature), seed=_given(settings.seed, -1),
                 n_predict=_given(settings.n_predict, -1), post_sampling_probs=False)
    return shown


def generation_settings(request: Request, limit: int, n_ctx: int) -> dict[str, Any]:
    """The settings a job ran with, as llama-server reports them (``generation_settings``)."""
    params = request.params
    shown: dict[str, Any] = {f.name: getattr(params, f.name) for f in dataclasses.fields(params)
                             if f.name not in ("logit_bias", "grammar_triggers", "dry_sequence_breakers")}
    shown.update(n_predict=limit, n_ctx=n_ctx, stop=list(request.stops), n_probs=request.logprobs or 0,
                 post_sampling_probs=request.post_sampling,
                 dry_sequence_breakers=list(params.dry_sequence_breakers), grammar=params.grammar or "",
                 logit_bias=[{"token": t, "bias": b if b != float("-inf") else None}  # JSON has no -inf
                             for t, b in (params.logit_bias or {}).items()])
    return shown
