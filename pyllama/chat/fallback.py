"""The chat format for a model whose GGUF carries no chat template (most often a base model).

Such a model was never taught a chat format, but its vocabulary says which family it comes
from: a Gemma vocabulary has ``<start_of_turn>``, a Qwen one ``<|im_start|>``. That family's
format is the one the model has most likely seen; ChatML is the last resort. Whatever is
chosen is said (at the server's start, in ``/props``, by ``pyllama chat``), never silent.
"""

from __future__ import annotations

import dataclasses

from ..vocab import Vocab

# a family's format, and the special tokens that identify its vocabulary
FAMILIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("gemma", ("<start_of_turn>", "<end_of_turn>")),
    ("chatml", ("<|im_start|>", "<|im_end|>")),
    ("llama-3", ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")),
    ("phi-3", ("<|user|>", "<|assistant|>", "<|end|>")),
    ("mistral-instruct", ("[INST]", "[/INST]")),
)
LAST_RESORT = "chatml"


@dataclasses.dataclass(frozen=True)
class Fallback:
    """The format standing in for a missing template, and the vocabulary's tokens that chose it
    (none when nothing in the vocabulary pointed to a family)."""

    format: str
    evidence: tuple[str, ...] = ()

    @property
    def note(self) -> str:
        if self.evidence:
            why = f"its vocabulary has {' and '.join(self.evidence)}"
        else:
            why = "no format's tokens are in its vocabulary, so it may not know this one"
        return f"the model has no chat template; chats use the {self.format} format instead ({why})"


def has_token(vocab: Vocab, text: str) -> bool:
    """Whether ``text`` is one token of the vocabulary (not text that merely spells it)."""
    tokens = vocab.tokenize(text, add_special=False, parse_special=True)
    return len(tokens) == 1 and vocab.text(tokens[0]) == text


def fallback_for(vocab: Vocab) -> Fallback:
    for name, markers in FAMILIES:
        if all(has_token(vocab, marker) for marker in markers):
            return Fallback(name, markers)
    return Fallback(LAST_RESORT)
