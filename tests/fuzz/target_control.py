"""Control-socket requests (``agent.runtime.control``): what any local client may send.

``control``: the input is everything a client sends before closing its end.
The real ``ControlServer`` serves it (its ``_serve`` coroutine, over an
in-memory stream) for an agent made of a real engine and a real ``Presence``
(metadata kept in memory). Contract: nothing escapes the server; every client
that sent anything gets exactly one JSON object line back (a ``watch``,
closed by this client at once, gets a graph line per change so far, maybe
none); a failure is ``{"ok": false, "kind": ...}`` with ``kind`` ``invalid``
or ``failed``, never the "internal error" of an exception the server did not
expect (that branch logs a traceback: a finding).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, TypeVar

from agent.api.presence import Presence
from agent.core.engine import Engine
from agent.runtime.control import MAX_REQUEST_BYTES, ControlServer, parse_request

from . import world
from .contract import Target, require

T = TypeVar("T")


class _Driver:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def call(self, fn: Any) -> Any:
        result = fn(self.engine, world.NOW)
        self.engine.datagrams_to_send(world.NOW)
        return result


class _MemoryStore:
    def __init__(self) -> None:
        self.text: str | None = None

    def save_metadata_json(self, text: str) -> None:
        self.text = text

    def load_metadata_json(self) -> str | None:
        return self.text


class _Agent:
    """What ``ControlServer`` uses of ``agent.runtime.agent.Agent``."""

    def __init__(self) -> None:
        self.engine = world.engine(world.LOCAL)
        self.presence = Presence(_Driver(self.engine), self.engine.public_key, _MemoryStore())
        self.state_dir = Path("/nonexistent/fuzz-control")
        self.mirror = None
        self.peer_key_string = self.engine.peer_key_string

    def now(self) -> float:
        return world.NOW

    def stats(self) -> dict[str, int]:
        return dict(self.engine.stats)

    def transport_status(self) -> list[dict[str, object]]:
        return []


class _Writer:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        return None


async def _serve(data: bytes) -> bytes:
    agent = _Agent()
    try:
        server = ControlServer(agent)  # type: ignore[arg-type]
        reader = asyncio.StreamReader(limit=MAX_REQUEST_BYTES)
        reader.feed_data(data)
        reader.feed_eof()
        writer = _Writer()
        await server._serve(reader, writer)  # type: ignore[arg-type]
        return bytes(writer.data)
    finally:
        agent.presence.close()


_LOOP = asyncio.new_event_loop()


def _op(data: bytes) -> object:
    """The op the server will see in ``data``'s first line, or ``None`` if it refuses the line."""
    line = data.split(b"\n", 1)[0]
    try:
        return parse_request(line)["op"] if len(line) <= MAX_REQUEST_BYTES else None
    except Exception:  # the server's refusal (a private type): it answers that
        return None


def control(data: bytes) -> None:
    out = _LOOP.run_until_complete(_serve(data))
    lines = out.split(b"\n")
    require(lines[-1] == b"", f"the answer is not whole lines: {out[:200]!r}")
    answers = [json.loads(line) for line in lines[:-1]]
    if not data:
        require(not answers, "an answer to a client that sent nothing")
    elif _op(data) == "watch":  # a graph per change until the client closes: this one closed at once
        require(all(a.get("ok") is True and "graph" in a for a in answers), f"watch answers {out[:200]!r}")
    else:
        require(len(answers) == 1, f"{len(answers)} answers to one request: {out[:200]!r}")
    for answer in answers:
        require(isinstance(answer, dict) and isinstance(answer.get("ok"), bool), f"answer {answer!r:.200}")
        if not answer["ok"]:
            require(answer.get("kind") in ("invalid", "failed"), f"answer kind {answer.get('kind')!r}")
            require("internal error" not in str(answer.get("error")), "the server hit an unexpected error")


TARGETS = (Target("control", control),)
