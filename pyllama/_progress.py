"""A one-line progress bar for model loading on a terminal."""

from __future__ import annotations

from typing import Callable, TextIO

WIDTH = 30


def progress_bar(stream: TextIO, label: str) -> Callable[[float], None]:
    """A progress callback that redraws ``label [#####     ]  50%`` in place, newline at 100%."""
    shown = [-1]

    def update(fraction: float) -> None:
        percent = int(fraction * 100)
        if percent == shown[0]:
            return
        shown[0] = percent
        filled = int(fraction * WIDTH)
        stream.write(f"\r{label} [{'#' * filled}{' ' * (WIDTH - filled)}] {percent:3d}%")
        if percent >= 100:
            stream.write("\n")
        stream.flush()

    return update
