"""Turning generated token pieces into text that is safe to hand out.

Token pieces are bytes and may end inside a UTF-8 character (byte-fallback vocabularies
split Chinese characters and emoji over several tokens). A stop string may also span
several tokens. :class:`TextStream` emits only complete characters, never any part of a
stop string, and holds back a tail that could still grow into one.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class TextStream:
    def __init__(self, stops: Sequence[str] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = [s for s in stops if s]
        self._held = ""
        self.stopped_by: str | None = None  # the stop string that ended the text

    @property
    def stopped(self) -> bool:
        return self.stopped_by is not None

    def push(self, piece: bytes) -> str:
        """Add a token's bytes; return the text that can be shown now."""
        if self.stopped:
            return ""
        text = self._held + self._decoder.decode(piece)
        found = [(i, stop) for stop in self._stops if (i := text.find(stop)) >= 0]
        if found:
            cut, self.stopped_by = min(found)
            self._held = ""
            return text[:cut]
        keep = self._partial_stop_length(text)
        self._held = text[len(text) - keep:] if keep else ""
        return text[: len(text) - keep]

    def finish(self) -> str:
        """The text still held back once generation ended without a stop string."""
        if self.stopped:
            return ""
        text = self._held + self._decoder.decode(b"", final=True)
        self._held = ""
        return text

    def _partial_stop_length(self, text: str) -> int:
        """Length of the longest end of ``text`` that begins some stop string."""
        longest = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:n]):
                    longest = n
                    break
        return longest
