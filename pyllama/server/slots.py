"""Slots, for llama-server's ``/slots`` routes (server/llamacpp.py): what each slot holds and
does, and saving, restoring and erasing a slot's KV memory.

Slot files live in ``--slot-save-path`` and nowhere else: a request names a file, never a path
(no separators, no leading dot), and the resolved path must stay inside that folder. The file
work runs on the engine thread between steps, since it reads and writes the KV memory the
steps use.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from .engine import Engine
from .errors import RequestError

_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")


def slot_file(folder: str | None, name: str) -> Path:
    """The path of slot file ``name`` inside ``folder``; a 4xx for anything but a plain name there."""
    if not folder:
        raise RequestError(501, "slot files are off: start the server with --slot-save-path FOLDER",
                           code="not_supported")
    if not _FILE_NAME.fullmatch(name) or ".." in name:
        raise RequestError(400, f"'filename' must be a plain file name (letters, digits, . _ -), not {name!r}",
                           "filename")
    root = Path(folder).resolve()
    path = (root / name).resolve()
    if path.parent != root:
        raise RequestError(400, f"'filename' {name!r} leaves the slot folder", "filename")
    return path


def _idle_slot(engine: Engine, slot_id: int):
    if not 0 <= slot_id < len(engine.slots):
        raise RequestError(400, f"there is no slot {slot_id}: this server has {len(engine.slots)}", "id_slot")
    slot = engine.slots[slot_id]
    if slot.job is not None:
        raise RequestError(409, f"slot {slot_id} is busy; try again when it is idle", "id_slot", "slot_busy")
    return slot


def save(engine: Engine, slot_id: int, path: Path) -> dict[str, Any]:
    slot = _idle_slot(engine, slot_id)
    started = time.perf_counter()
    engine.context.save_state(path, slot.tokens, seq_id=slot.seq_id)
    return {"id_slot": slot_id, "filename": path.name, "n_saved": len(slot.tokens),
            "n_written": path.stat().st_size, "timings": {"save_ms": 1e3 * (time.perf_counter() - started)}}


def restore(engine: Engine, slot_id: int, path: Path) -> dict[str, Any]:
    slot = _idle_slot(engine, slot_id)
    if not path.is_file():
        raise RequestError(404, f"no slot file {path.name!r}", "filename")
    started = time.perf_counter()
    engine.context.kv_remove(slot.seq_id)
    slot.tokens = []
    try:
        tokens = engine.context.load_state(path, seq_id=slot.seq_id)
    except Exception as exc:  # noqa: BLE001 - a file of another model or a damaged one
        engine.context.kv_remove(slot.seq_id)
        raise RequestError(400, f"cannot restore {path.name!r}: {exc}", "filename") from exc
    slot.tokens = tokens
    return {"id_slot": slot_id, "filename": path.name, "n_restored": len(tokens), "n_read": path.stat().st_size,
            "timings": {"restore_ms": 1e3 * (time.perf_counter() - started)}}


def erase(engine: Engine, slot_id: int) -> dict[str, Any]:
    slot = _idle_slot(engine, slot_id)
    erased = len(slot.tokens)
    engine.context.kv_remove(slot.seq_id)
    slot.tokens = []
    return {"id_slot": slot_id, "n_erased": erased}


def describe(engine: Engine) -> list[dict[str, Any]]:
    """Each slot as /slots shows it (read without stopping the engine: a snapshot)."""
    states = []
    for slot in engine.slots:
        generation = slot.generation
        states.append({"id": slot.seq_id, "n_ctx": engine.n_ctx, "is_processing": slot.job is not None,
                       "n_cached": len(slot.tokens), "n_prompt_pending": len(slot.pending),
                       "next_token": [{"has_next_token": slot.job is not None,  # a list, as llama-server's
                                       "n_decoded": generation.generated if generation else 0,
                                       "n_remain": generation.limit - generation.generated if generation else -1}]})
    return states
