"""The local control socket: how the CLI talks to a running agent.

A Unix stream socket ``control.sock`` in the state directory (the directory is
0700 and the socket 0600, so only the owner may connect). One JSON object per
line each way::

    {"op": "graph"}                    -> {"ok": true, "graph": {...}}
    {"op": "watch"}                    -> one {"ok": true, "graph": {...}} per change, until closed
    {"op": "metadata_get"}             -> {"ok": true, "metadata": {...}}
    {"op": "metadata_set", "json": s}  -> {"ok": true} | {"ok": false, "error": "...", "kind": "invalid"}
    {"op": "status"}                   -> {"ok": true, "peer_key_string": ..., "stats": {...},
                                           "transports": [...]  (dongles up, BLE nodes connected
                                           and waiting), "mqtt": {...} | null}  (the mirror's state)

Graphs use the Presence API's field names; each peer also carries its held
signed records, base64, under ``signed_records``, so anyone can verify them.

Every connection gets an answer line, whatever it sends; a failure is
``{"ok": false, "error": "<one line>", "kind": K}`` and changes nothing:

- ``invalid``: the request itself was refused -- longer than
  :data:`MAX_REQUEST_BYTES` (the reply names its size; the line is read to its
  end first, so the client can read the reply), not UTF-8, not JSON, nested
  too deep, not an object, an unknown ``op``, a field of the wrong type, or
  metadata the agent will not publish. The CLI exits 2 on these.
- ``timeout``: no whole request line within :data:`REQUEST_TIMEOUT` seconds of
  connecting; the connection is closed.
- ``busy``: :data:`MAX_CLIENTS` connections are already being served
  (``watch`` ones included); the newcomer is refused at once and closed, and
  the agent logs that, at most once per :data:`REFUSAL_LOG_INTERVAL`.
- ``failed``: the agent could not do what was asked (it is closing, say).

A ``watch`` connection is never timed out, but ends -- and releases its
observer thread -- as soon as its client closes (the server reads the socket to
its end while it sends graphs).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from agent.core.errors import MetadataError, PresenceError
from agent.core.graph import PresenceGraph
from agent.core.keys import public_key_from_string

if TYPE_CHECKING:
    from agent.runtime.agent import Agent

log = logging.getLogger("agent.runtime.control")

SOCKET_NAME: Final = "control.sock"
#: Requests longer than this (without the newline) are refused. The largest legitimate one,
#: metadata_set with 4096 bytes of JSON, is at most 6 x 4096 bytes once escaped.
MAX_REQUEST_BYTES: Final = 64 * 1024
#: A client has this many seconds from connecting to send its whole request line.
REQUEST_TIMEOUT: Final = 10.0
#: Connections served at once (``watch`` ones included, each with an observer thread).
MAX_CLIENTS: Final = 64
#: At most one log line about refused (``busy``) clients per this many seconds.
REFUSAL_LOG_INTERVAL: Final = 10.0

#: Reply kinds (the ``kind`` of a ``{"ok": false}`` reply).
INVALID: Final = "invalid"
TIMEOUT: Final = "timeout"
BUSY: Final = "busy"
FAILED: Final = "failed"

_OPS: Final = frozenset({"graph", "watch", "metadata_get", "metadata_set", "status"})


def socket_path(state_dir: Path) -> Path:
    return Path(state_dir) / SOCKET_NAME


def graph_document(agent: Agent, graph: PresenceGraph) -> dict[str, Any]:
    """The graph as JSON, each peer with its signed records (base64) for independent checks."""
    document = graph.to_json()
    for peer in [document["local_peer"], *document["remote_peers"]]:
        records = agent.engine.records_of(public_key_from_string(peer["peer_key_string"]))
        peer["signed_records"] = [base64.b64encode(r.raw).decode("ascii") for r in records]
    return document


def too_large_message(size: int) -> str:
    limit = MAX_REQUEST_BYTES
    return f"the control request is {size} bytes; the limit is {limit} bytes. Nothing was changed."


class _Refusal(Exception):
    """A request answered with ``{"ok": false}`` (server side)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class _ClientGone(Exception):
    """The client closed before sending anything: nobody to answer."""


class ControlServer:
    """Serves the control protocol on the agent's event loop."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        self._server: asyncio.AbstractServer | None = None
        self._path = socket_path(agent.state_dir)
        self._clients: set[asyncio.Task[None]] = set()
        self._refused = 0  # busy refusals not yet logged
        self._refusal_logged_at = -REFUSAL_LOG_INTERVAL

    @property
    def client_count(self) -> int:
        """Connections being served now."""
        return len(self._clients)

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
        try:
            if len(self._clients) >= MAX_CLIENTS:
                self._log_refusal()
                message = f"the agent is serving {MAX_CLIENTS} control clients (its limit); try again later"
                await _reply(writer, {"ok": False, "error": message, "kind": BUSY})
                return
            self._clients.add(task)
            try:
                request = await self._read_request(reader)
            except _Refusal as refusal:
                await _reply(writer, {"ok": False, "error": str(refusal), "kind": refusal.kind})
                return
            if request["op"] == "watch":
                await self._watch(reader, writer)
            else:
                await _reply(writer, self._answer(request))
        except (_ClientGone, ConnectionError, asyncio.CancelledError):
            pass
        except PresenceError as exc:  # the agent is closing, say
            with contextlib.suppress(Exception):
                await _reply(writer, {"ok": False, "error": str(exc), "kind": FAILED})
        except Exception:  # a bug of ours: say so to the client, keep serving the others
            log.exception("control request failed")
            with contextlib.suppress(Exception):
                error = "internal error (see the agent's log)"
                await _reply(writer, {"ok": False, "error": error, "kind": FAILED})
        finally:
            self._clients.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    def _log_refusal(self) -> None:
        self._refused += 1
        now = time.monotonic()
        if now - self._refusal_logged_at >= REFUSAL_LOG_INTERVAL:
            log.warning(
                "refused %d control client(s): %d are connected, the limit",
                self._refused,
                MAX_CLIENTS,
            )
            self._refused = 0
            self._refusal_logged_at = now

    async def _read_request(self, reader: asyncio.StreamReader) -> dict[str, Any]:
        """The request line, parsed and checked; raises :class:`_Refusal` with the reply's reason."""
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                line = await _read_line(reader)
        except TimeoutError:
            raise _Refusal(TIMEOUT, f"no request line within {REQUEST_TIMEOUT:g} s; closing") from None
        return parse_request(line)

    def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        agent = self._agent
        op = request["op"]
        try:
            if op == "graph":
                return {"ok": True, "graph": graph_document(agent, agent.engine.graph(agent.now()))}
            if op == "metadata_get":
                return {"ok": True, "metadata": json.loads(agent.presence.peer_metadata_json_str())}
            if op == "metadata_set":
                agent.presence.set_peer_metadata_json_str(request["json"])
                return {"ok": True}
            assert op == "status", op
            mirror = agent.mirror.status() if agent.mirror is not None else None
            return {
                "ok": True,
                "peer_key_string": agent.peer_key_string,
                "stats": agent.stats(),
                "transports": agent.transport_status(),
                "mqtt": mirror,
            }
        except MetadataError as exc:
            return {"ok": False, "error": str(exc), "kind": INVALID}
        except PresenceError as exc:
            return {"ok": False, "error": str(exc), "kind": FAILED}

    async def _watch(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Send graphs until the client closes its end (or the agent stops)."""
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

        async def send_graphs() -> None:
            while True:
                graph = await queue.get()
                await _reply(writer, {"ok": True, "graph": graph_document(self._agent, graph)})

        # On the loop: the driver runs the first graph inline, no executor thread is needed.
        observer = self._agent.presence.observe(on_change)
        sending = asyncio.ensure_future(send_graphs())
        closing = asyncio.ensure_future(_until_eof(reader))
        try:
            await asyncio.wait({sending, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            observer.stop()
            for part in (sending, closing):
                part.cancel()
            # Collect both (a closed peer makes the sender fail: that is the expected end).
            await asyncio.gather(sending, closing, return_exceptions=True)


def parse_request(line: bytes) -> dict[str, Any]:
    """A request line checked field by field; raises :class:`_Refusal` (``invalid``) naming the fault."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Refusal(INVALID, f"the request is not UTF-8 (byte {exc.start})") from None
    try:
        request = json.loads(text)
    except RecursionError:
        raise _Refusal(INVALID, "the request nests too deeply") from None
    except ValueError as exc:
        raise _Refusal(INVALID, f"the request is not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise _Refusal(INVALID, f"the request must be a JSON object, got {type(request).__name__}")
    op = request.get("op")
    if not isinstance(op, str):
        raise _Refusal(INVALID, "the request needs an 'op' string")
    if op not in _OPS:
        raise _Refusal(INVALID, f"unknown op {op[:64]!r} (known: {', '.join(sorted(_OPS))})")
    if op == "metadata_set" and not isinstance(request.get("json"), str):
        raise _Refusal(INVALID, "metadata_set needs a 'json' string")
    return request


async def _read_line(reader: asyncio.StreamReader) -> bytes:
    """One line without its newline (a last line without one counts); an over-long line is read
    to its end, so the client has finished sending when it is refused."""
    try:
        return (await reader.readuntil(b"\n"))[:-1]
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise _ClientGone from None
        return exc.partial
    except asyncio.LimitOverrunError:
        size = 0
        while chunk := await reader.read(MAX_REQUEST_BYTES):
            end = chunk.find(b"\n")
            if end >= 0:
                size += end
                break
            size += len(chunk)
        raise _Refusal(INVALID, too_large_message(size)) from None


async def _until_eof(reader: asyncio.StreamReader) -> None:
    """Read and ignore whatever a watch client sends, until it closes."""
    while await reader.read(4096):
        pass


async def _reply(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
    await writer.drain()


# ---------------------------------------------------------------- the client side


class ControlError(PresenceError):
    """The running agent could not be reached, did not answer, or refused the request."""


class InvalidRequestError(ControlError):
    """The agent (or the client, before sending) refused the request as bad input; nothing changed."""


class RequestTooLargeError(InvalidRequestError):
    """A request over :data:`MAX_REQUEST_BYTES`; it was not sent."""

    def __init__(self, size: int) -> None:
        super().__init__(too_large_message(size))
        self.size = size
        self.limit = MAX_REQUEST_BYTES


def checked(answer: dict[str, Any]) -> dict[str, Any]:
    """``answer`` if it is ``{"ok": true, ...}``; else its error, raised as a :class:`ControlError`
    (:class:`InvalidRequestError` when the agent refused the request as bad input)."""
    if answer.get("ok") is True:
        return answer
    message = str(answer.get("error") or "the agent refused the request")
    if answer.get("kind") == INVALID:
        raise InvalidRequestError(message)
    raise ControlError(message)


def encode_request(message: dict[str, Any]) -> bytes:
    """The request line; :class:`RequestTooLargeError` if the agent would refuse its size."""
    data = json.dumps(message, separators=(",", ":")).encode()
    if len(data) > MAX_REQUEST_BYTES:
        raise RequestTooLargeError(len(data))
    return data + b"\n"


def request(state_dir: Path, message: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request to the agent running on ``state_dir``; return its answer."""
    for answer in stream(state_dir, message, timeout):
        return answer
    raise ControlError(f"the agent on {state_dir} closed the control connection without answering")


def stream(
    state_dir: Path, message: dict[str, Any], timeout: float | None = 10.0
) -> Iterator[dict[str, Any]]:
    """Send a request and yield every answer line (``watch`` yields until interrupted).

    Ends when the agent closes the connection. Raises :class:`ControlError` when the agent
    cannot be reached, does not answer within ``timeout`` seconds or answers garbage, and
    :class:`RequestTooLargeError` (before connecting) for a request the agent would refuse.
    """
    data = encode_request(message)
    path = socket_path(state_dir)
    sock = _connect(state_dir, path, timeout)
    with sock, sock.makefile("rb") as lines:
        try:
            sock.sendall(data)
        except TimeoutError:
            stuck = f"the agent on {state_dir} did not read the request in {timeout:g} s"
            raise ControlError(stuck) from None
        except OSError:
            pass  # closed early (busy, say): its answer, if any, is waiting to be read
        while True:
            try:
                line = lines.readline()
            except TimeoutError:
                raise ControlError(f"the agent on {state_dir} did not answer within {timeout:g} s") from None
            except OSError:
                return  # reset after its last answer: the connection is over
            if not line:
                return
            try:
                answer = json.loads(line)
            except (ValueError, RecursionError):
                answer = None
            if not isinstance(answer, dict) or not line.endswith(b"\n"):
                raise ControlError(f"the agent on {state_dir} sent a malformed answer")
            yield answer


def _connect(state_dir: Path, path: Path, timeout: float | None) -> socket.socket:
    """A connected socket; a full accept backlog (EAGAIN on a Unix socket) is retried until ``timeout``."""
    deadline = time.monotonic() + (timeout if timeout is not None else 10.0)
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            return sock
        except BlockingIOError:
            sock.close()
            if time.monotonic() >= deadline:
                raise ControlError(f"the agent on {state_dir} accepts no connection (backlog full)") from None
            time.sleep(0.01)
        except FileNotFoundError:
            sock.close()
            raise ControlError(f"no agent is running on {state_dir} (no {path})") from None
        except OSError as exc:
            sock.close()
            raise ControlError(f"cannot reach the agent on {path}: {exc.strerror or exc}") from None
