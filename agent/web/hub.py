"""The newest page document, encoded once, and the streams waiting for the next one.

A feed calls :meth:`Hub.publish` (on the server's event loop) or
:meth:`Hub.publish_threadsafe` (from any thread) with a whole document; every
SSE stream then sends the newest one. A stream that is still sending when two
documents arrive skips the first: a slow browser sees the latest state, never a
backlog (the control socket's ``watch`` does the same). Each document is
stamped with its ``version`` (1, 2, ...) and ``emitted_ms`` (Unix time in
milliseconds) so the page, and ``bench/webview.py``, can tell how late it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Mapping
from typing import Any

from agent.web.http import sse_frame


class Hub:
    """Holds the newest document; one per server, used on its event loop."""

    def __init__(self) -> None:
        self._version = 0
        self._json = b"null"
        self._frame = b""
        self._changed = asyncio.Event()

    @property
    def version(self) -> int:
        """0 until the first document, then the number of documents published."""
        return self._version

    @property
    def document_json(self) -> bytes:
        """The newest document as JSON (``null`` before the first)."""
        return self._json

    def publish(self, document: Mapping[str, Any]) -> None:
        """Make ``document`` the newest and wake every stream (call on the server's loop)."""
        self._version += 1
        stamped = {**document, "version": self._version, "emitted_ms": time.time() * 1000}
        text = json.dumps(stamped, separators=(",", ":"), ensure_ascii=False)
        self._json = text.encode()
        self._frame = sse_frame("graph", text, self._version)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def publish_threadsafe(self, loop: asyncio.AbstractEventLoop, document: Mapping[str, Any]) -> None:
        """:meth:`publish` from another thread; does nothing once ``loop`` is closed."""
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self.publish, document)

    async def next_frame(self, after: int) -> tuple[int, bytes]:
        """The newest SSE frame once its version is above ``after``: ``(version, frame)``."""
        while self._version <= after:
            await self._changed.wait()
        return self._version, self._frame
