"""The local control socket: how the CLI talks to a running agent.

A Unix stream socket ``control.sock`` in the state directory (the directory is
0700 and the socket 0600, so only the owner may connect). One JSON object per
line each way::

    {"op": "graph"}                    -> {"ok": true, "graph": {...}}
    {"op": "watch"}                    -> one {"ok": true, "graph": {...}} per change, until closed
    {"op": "metadata_get"}             -> {"ok": true, "metadata": {...}}
    {"op": "metadata_set", "json": s}  -> {"ok": true} | {"ok": false, "error": "..."}
    {"op": "status"}                   -> {"ok": true, "peer_key_string": ..., "stats": {...},
                                           "mqtt": {...} | null}  (the mirror's state and counters)

Graphs use the Presence API's field names; each peer also carries its held
signed records, base64, under ``signed_records``, so anyone can verify them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from agent.core.errors import PresenceError
from agent.core.graph import PresenceGraph
from agent.core.keys import public_key_from_string

if TYPE_CHECKING:
    from agent.runtime.agent import Agent

log = logging.getLogger("agent.runtime.control")

SOCKET_NAME: Final = "control.sock"
#: Requests longer than this are refused (the largest is metadata_set: 4 KiB of JSON, escaped).
MAX_REQUEST_BYTES: Final = 64 * 1024


def socket_path(state_dir: Path) -> Path:
    return Path(state_dir) / SOCKET_NAME


def graph_document(agent: Agent, graph: PresenceGraph) -> dict[str, Any]:
    """The graph as JSON, each peer with its signed records (base64) for independent checks."""
    document = graph.to_json()
    for peer in [document["local_peer"], *document["remote_peers"]]:
        records = agent.engine.records_of(public_key_from_string(peer["peer_key_string"]))
        peer["signed_records"] = [base64.b64encode(r.raw).decode("ascii") for r in records]
    return document


class ControlServer:
    """Serves the control protocol on the agent's event loop."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        self._server: asyncio.AbstractServer | None = None
        self._path = socket_path(agent.state_dir)
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()  # a stale socket from a killed agent
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self._path), limit=MAX_REQUEST_BYTES
            )
        finally:
            os.umask(old_umask)
        os.chmod(self._path, 0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._clients):
            task.cancel()
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            line = await reader.readline()
            try:
                request = json.loads(line)
                op = request["op"]
            except (ValueError, KeyError, TypeError):
                await _reply(writer, {"ok": False, "error": "malformed request"})
                return
            if op == "watch":
                await self._watch(writer)
            else:
                await _reply(writer, self._answer(op, request))
        except (ConnectionError, asyncio.CancelledError, ValueError):
            pass
        finally:
            self._clients.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    def _answer(self, op: str, request: dict[str, Any]) -> dict[str, Any]:
        agent = self._agent
        try:
            if op == "graph":
                return {"ok": True, "graph": graph_document(agent, agent.engine.graph(agent.now()))}
            if op == "metadata_get":
                return {"ok": True, "metadata": json.loads(agent.presence.peer_metadata_json_str())}
            if op == "metadata_set":
                text = request.get("json")
                if not isinstance(text, str):
                    return {"ok": False, "error": "metadata_set needs a 'json' string"}
                agent.presence.set_peer_metadata_json_str(text)
                return {"ok": True}
            if op == "status":
                mirror = agent.mirror.status() if agent.mirror is not None else None
                return {
                    "ok": True,
                    "peer_key_string": agent.peer_key_string,
                    "stats": agent.stats(),
                    "mqtt": mirror,
                }
        except PresenceError as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": False, "error": f"unknown op {op!r}"}

    async def _watch(self, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[PresenceGraph] = asyncio.Queue(maxsize=1)

        def offer(graph: PresenceGraph) -> None:
            # Keep only the newest graph: a slow reader sees the latest state, never a backlog.
            with contextlib.suppress(asyncio.QueueEmpty):
                queue.get_nowait()
            queue.put_nowait(graph)

        def on_change(graph: PresenceGraph) -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(offer, graph)

        observer = await asyncio.to_thread(self._agent.presence.observe, on_change)
        try:
            while True:
                graph = await queue.get()
                await _reply(writer, {"ok": True, "graph": graph_document(self._agent, graph)})
        finally:
            observer.stop()


async def _reply(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
    await writer.drain()


class ControlError(PresenceError):
    """The running agent could not be reached or refused the request."""


def request(state_dir: Path, message: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request to the agent running on ``state_dir``; return its answer."""
    for answer in stream(state_dir, message, timeout):
        return answer
    raise ControlError("the agent closed the control connection without answering")


def stream(
    state_dir: Path, message: dict[str, Any], timeout: float | None = 10.0
) -> Iterator[dict[str, Any]]:
    """Send a request and yield every answer line (``watch`` yields until interrupted)."""
    path = socket_path(state_dir)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except FileNotFoundError:
        sock.close()
        raise ControlError(f"no agent is running on {state_dir} (no {path})") from None
    except OSError as exc:
        sock.close()
        raise ControlError(f"cannot reach the agent on {path}: {exc}") from None
    with sock, sock.makefile("rb") as lines:
        sock.sendall(json.dumps(message).encode() + b"\n")
        for line in lines:
            yield json.loads(line)
