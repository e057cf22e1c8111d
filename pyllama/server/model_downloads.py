"""llama-server's ``POST /models``: a model downloaded from Hugging Face into the cache (server/
hf_cache.py) in the background, while the server goes on serving. It takes no model slot: the
model is listed once it is whole, and loads like any other when first asked for.

Progress, the end and a failure are events on ``GET /models/sse`` (server/model_events.py).
``DELETE /models`` cancels a download under way.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable

from ..errors import DownloadError
from .hf_download import download
from .model_events import ModelEvents

logger = logging.getLogger("pyllama.server")

class Downloads:
    def __init__(self, events: ModelEvents, finished: Callable[[], Awaitable[None]]) -> None:
        """``finished``: what the server does once a model is in the cache (lists it)."""
        self.events, self.finished = events, finished
        self._running: dict[str, tuple[asyncio.Task[None], threading.Event]] = {}

    def __contains__(self, model_id: str) -> bool:
        return model_id in self._running

    def __iter__(self):
        return iter(list(self._running))

    def start(self, model_id: str) -> None:
        """Begin downloading (on the event loop); the caller checked the id and that it is new."""
        cancelled = threading.Event()
        task = asyncio.get_running_loop().create_task(self._download(model_id, cancelled))
        self._running[model_id] = (task, cancelled)

    async def cancel(self, model_id: str) -> None:
        """Stop a download under way and wait until it has stopped (its partial file is gone)."""
        task, cancelled = self._running[model_id]
        cancelled.set()
        await asyncio.shield(task)

    async def _download(self, model_id: str, cancelled: threading.Event) -> None:
        loop = asyncio.get_running_loop()
        files: dict[str, dict[str, int]] = {}

        def progress(url: str, done: int, total: int) -> None:  # in the download's thread, at most every 0.1 s
            files[url] = {"done": done, "total": total}
            snapshot = {"progress": {u: dict(f) for u, f in files.items()}}  # every file so far, as llama-server
            loop.call_soon_threadsafe(self.events.publish, model_id, "download_progress", snapshot)

        self.events.publish(model_id, "status_change", {"status": "downloading"})
        started = time.perf_counter()
        try:
            path = await asyncio.to_thread(download, model_id, progress, cancelled.is_set)
        except Exception as exc:  # noqa: BLE001 - a download that fails, however oddly, must not end the server
            logger.warning("model %s: download failed: %s", model_id, exc,
                           exc_info=not isinstance(exc, DownloadError))  # an odd failure: its traceback too
            self.events.publish(model_id, "download_failed", {"error": str(exc) or type(exc).__name__})
            return
        finally:
            self._running.pop(model_id, None)  # before it is listed from the cache: never both
        logger.info("model %s: downloaded to %s in %.1f s", model_id, path, time.perf_counter() - started)
        try:
            await self.finished()  # listed before its end is announced: a client then finds it
        except ValueError as exc:  # the other model files read wrong now; the download is whole
            logger.warning("model %s: downloaded, but the models could not be read again: %s", model_id, exc)
        self.events.publish(model_id, "download_finished")
