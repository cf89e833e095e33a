"""The web view's HTTP server: one page, its script and style, the graph as JSON, and a live stream.

Routes (``GET`` only; any other method is ``405`` with ``Allow: GET``)::

    /             the page                      /app.js, /style.css   its script and style
    /graph.json   the newest document            /events               text/event-stream: one
                                                                        ``event: graph`` per document

Built on asyncio streams, the way the control socket is: one coroutine per
connection and no thread per client, so a browser that goes away costs nothing
once its socket closes. An event stream reads its socket to the end while it
sends, so a closed client is noticed at once (not at the next write), and its
task, buffers and hub wait are released then. A client that does not read is
dropped after :data:`SEND_TIMEOUT` seconds of a full send buffer. At most
``max_clients`` streams are served (more get ``503``), and at most
:data:`MAX_CONNECTIONS_EXTRA` other connections at once, each with
:data:`REQUEST_TIMEOUT` seconds to send its request head.

Access: listening on loopback, the page is open to this machine's users (it is
read-only and shows what every peer of the mesh receives anyway). Listening on
any other address, every request needs the token, as ``?token=``, the
``presence_view_token`` cookie (set by the page's response), an
``X-Presence-Token`` header or ``Authorization: Bearer``; without one the answer
is ``401``, with a wrong one ``403``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources
from typing import Any, Final

from agent.web import http
from agent.web.http import ClientGone, HttpError, Request
from agent.web.hub import Hub
from agent.web.settings import ListenAddress

log = logging.getLogger("agent.web")

#: Seconds a connection has to send its request head.
REQUEST_TIMEOUT: Final = 10.0
#: Seconds a stream may wait for its send buffer to drain before the client is dropped.
SEND_TIMEOUT: Final = 10.0
#: Seconds between keepalive comments on an idle stream.
KEEPALIVE: Final = 15.0
#: Connections that are not event streams, served at once.
MAX_CONNECTIONS_EXTRA: Final = 32
#: A stream's send buffer above this many bytes makes it wait (drain).
STREAM_BUFFER_BYTES: Final = 512 * 1024
COOKIE: Final = "presence_view_token"

_STATIC: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}


def static_files() -> dict[str, tuple[bytes, str]]:
    """Path -> (bytes, content type) of the page's files, read from the installed package."""
    root = resources.files("agent.web") / "static"
    return {path: ((root / name).read_bytes(), kind) for path, (name, kind) in _STATIC.items()}


@dataclass(frozen=True, slots=True)
class ServerStats:
    """What the server is serving now, and what it has refused since it started."""

    streams: int
    connections: int
    refused_streams: int
    refused_connections: int


class ViewServer:
    """Serves :class:`Hub`'s documents on ``address``; ``token`` is required when it is not ``None``."""

    def __init__(self, hub: Hub, address: ListenAddress, *, token: str | None, max_clients: int = 16) -> None:
        if not address.loopback and token is None:
            raise ValueError(f"listening on {address.host} needs a token")
        self.hub = hub
        self.address = address
        self._token = token
        self._max_clients = max_clients
        self._files = static_files()
        self._server: asyncio.Server | None = None
        self._streams: set[asyncio.Task[None]] = set()
        self._others: set[asyncio.Task[None]] = set()
        self._refused_streams = 0
        self._refused_connections = 0

    @property
    def port(self) -> int:
        """The port listened on (the kernel's choice when the address asked for 0)."""
        assert self._server is not None, "start() first"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return self.address.url(self.port)

    @property
    def stats(self) -> ServerStats:
        return ServerStats(
            len(self._streams), len(self._others), self._refused_streams, self._refused_connections
        )

    async def start(self) -> None:
        """Listen; raises ``OSError`` if the address cannot be bound."""
        self._server = await asyncio.start_server(
            self._serve, self.address.host, self.address.port, limit=http.MAX_HEAD_BYTES
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [*self._streams, *self._others]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> ViewServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------ one connection

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._others) >= MAX_CONNECTIONS_EXTRA + 1:
            self._refused_connections += 1
            writer.close()
            return
        self._others.add(task)
        try:
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    request = await http.read_request(reader)
                self._check(request)
            except HttpError as error:
                writer.write(http.error_response(error))
                await writer.drain()
                return
            except TimeoutError:
                writer.write(http.error_response(HttpError(HTTPStatus.REQUEST_TIMEOUT, "request too slow")))
                return
            if request.path == "/events":
                self._others.discard(task)
                await self._stream(task, reader, writer)
            else:
                writer.write(self._answer(request))
                await writer.drain()
        except (ClientGone, ConnectionError, asyncio.CancelledError):
            pass
        except Exception:  # a bug of ours: log it, keep serving the others
            log.exception("web view request failed")
        finally:
            self._others.discard(task)
            self._streams.discard(task)
            with contextlib.suppress(Exception):
                writer.close()

    def _check(self, request: Request) -> None:
        """Raises :class:`HttpError` for a method other than GET, or a missing or wrong token."""
        if request.method != "GET":
            raise HttpError(
                HTTPStatus.METHOD_NOT_ALLOWED, "the web view is read-only: GET only", (("Allow", "GET"),)
            )
        if self._token is None:
            return
        given = _token_of(request)
        if given is None:
            raise HttpError(
                HTTPStatus.UNAUTHORIZED,
                "this web view needs its token (in view.token of the agent's state directory): ?token=...",
                (("WWW-Authenticate", 'Bearer realm="presence-agent view"'),),
            )
        if not hmac.compare_digest(given.encode(), self._token.encode()):
            raise HttpError(HTTPStatus.FORBIDDEN, "wrong token")

    def _answer(self, request: Request) -> bytes:
        if request.path == "/graph.json":
            return http.response(HTTPStatus.OK, self.hub.document_json, "application/json")
        found = self._files.get(request.path)
        if found is None:
            return http.error_response(HttpError(HTTPStatus.NOT_FOUND, f"no page at {request.path[:100]}"))
        body, kind = found
        headers: tuple[tuple[str, str], ...] = ()
        if self._token is not None and request.path == "/":
            # The page's own requests (script, style, stream) then carry the token without the URL.
            cookie = f"{COOKIE}={self._token}; Path=/; HttpOnly; SameSite=Strict"
            headers = (("Set-Cookie", cookie),)
        return http.response(HTTPStatus.OK, body, kind, headers)

    async def _stream(
        self, task: asyncio.Task[None], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Send every newest document until the client closes or stops reading."""
        if len(self._streams) >= self._max_clients:
            self._refused_streams += 1
            busy = f"the web view serves {self._max_clients} live clients (its limit); try again later"
            writer.write(
                http.error_response(HttpError(HTTPStatus.SERVICE_UNAVAILABLE, busy, (("Retry-After", "5"),)))
            )
            await writer.drain()
            return
        self._streams.add(task)
        writer.transport.set_write_buffer_limits(high=STREAM_BUFFER_BYTES)
        writer.write(http.stream_head() + http.SSE_RETRY)
        closed = asyncio.ensure_future(_until_eof(reader))
        version = 0
        following: asyncio.Future[tuple[int, bytes]] | None = None
        try:
            while True:
                if following is None:
                    following = asyncio.ensure_future(self.hub.next_frame(version))
                async with asyncio.timeout(SEND_TIMEOUT):
                    await writer.drain()
                waiting: set[asyncio.Future[Any]] = {following, closed}
                done, _ = await asyncio.wait(waiting, timeout=KEEPALIVE, return_when=asyncio.FIRST_COMPLETED)
                if closed in done:
                    return
                if following in done:
                    version, frame = following.result()
                    following = None
                    writer.write(frame)
                else:
                    writer.write(http.SSE_KEEPALIVE)
        except TimeoutError:
            log.info("dropped a web view client that stopped reading")
        finally:
            for part in (closed, following):
                if part is not None:
                    part.cancel()
            await asyncio.gather(closed, *([following] if following else []), return_exceptions=True)


def _token_of(request: Request) -> str | None:
    """The token a request offers: query, header, bearer, then cookie."""
    if "token" in request.query:
        return request.query["token"]
    if "x-presence-token" in request.headers:
        return request.headers["x-presence-token"]
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    return request.cookie(COOKIE)


async def _until_eof(reader: asyncio.StreamReader) -> None:
    """Read and ignore what a stream's client sends, until it closes."""
    with contextlib.suppress(ConnectionError):
        while await reader.read(4096):
            pass
