"""Just enough HTTP/1.1 for a read-only page: parse one request head, build responses, frame SSE.

No sockets here except the :class:`asyncio.StreamReader` a request is read from.
Each connection carries one request (responses say ``Connection: close``); the
page makes three (the page, its script and style, the event stream), so
keep-alive would save nothing worth its parser.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from typing import Final
from urllib.parse import parse_qs, urlsplit

#: The longest request head (request line and headers) accepted.
MAX_HEAD_BYTES: Final = 8192

#: Sent with every response: nothing from elsewhere, no framing, no sniffing, no referrer.
SECURITY_HEADERS: Final = (
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
)


class HttpError(Exception):
    """A request answered with an error status; the message is the one-line body."""

    def __init__(self, status: HTTPStatus, message: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers


class ClientGone(Exception):
    """The client closed before sending a whole request head: nobody to answer."""


@dataclass(frozen=True, slots=True)
class Request:
    """One parsed request head. Header names are lower case; a repeated header keeps its last value."""

    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def cookie(self, name: str) -> str | None:
        jar = SimpleCookie()
        try:
            jar.load(self.headers.get("cookie", ""))
        except CookieError:
            return None
        morsel = jar.get(name)
        return morsel.value if morsel is not None else None


async def read_request(reader: asyncio.StreamReader) -> Request:
    """Read and parse one request head; raises :class:`HttpError` (400/431) or :class:`ClientGone`."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            raise ClientGone from None
        raise HttpError(HTTPStatus.BAD_REQUEST, "incomplete request head") from None
    except asyncio.LimitOverrunError:
        raise HttpError(
            HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"request head over {MAX_HEAD_BYTES} bytes"
        ) from None
    return parse_head(head)


def parse_head(head: bytes) -> Request:
    """A request head (up to and including its blank line) as a :class:`Request`."""
    if len(head) > MAX_HEAD_BYTES:
        raise HttpError(
            HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"request head over {MAX_HEAD_BYTES} bytes"
        )
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(HTTPStatus.BAD_REQUEST, "request head is not ASCII") from None
    line, *header_lines = text.rstrip("\r\n").split("\r\n")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0].isalpha():
        raise HttpError(HTTPStatus.BAD_REQUEST, "malformed request line")
    method, target, _version = parts
    headers = {}
    for header in header_lines:
        name, sep, value = header.partition(":")
        if not sep or not name or name != name.strip():
            raise HttpError(HTTPStatus.BAD_REQUEST, "malformed header line")
        headers[name.lower()] = value.strip()
    url = urlsplit(target)
    query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
    return Request(method, url.path or "/", query, headers)


def response(
    status: HTTPStatus,
    body: bytes = b"",
    content_type: str = "text/plain; charset=utf-8",
    headers: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """A whole response with ``Content-Length`` and ``Connection: close``."""
    lines = [f"HTTP/1.1 {status.value} {status.phrase}", f"Content-Type: {content_type}"]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "Cache-Control: no-store"]
    lines += [f"{name}: {value}" for name, value in (*SECURITY_HEADERS, *headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def error_response(error: HttpError) -> bytes:
    return response(error.status, (str(error) + "\n").encode(), headers=error.headers)


def stream_head() -> bytes:
    """The head of a ``text/event-stream`` response (no length: it lasts until either side closes)."""
    lines = ["HTTP/1.1 200 OK", "Content-Type: text/event-stream; charset=utf-8", "Cache-Control: no-store"]
    lines += ["Connection: close", "X-Accel-Buffering: no"]
    lines += [f"{name}: {value}" for name, value in SECURITY_HEADERS]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def sse_frame(event: str, data: str, event_id: int | None = None) -> bytes:
    """One server-sent event: ``event:``, ``id:``, one ``data:`` line per line of ``data``, a blank line."""
    if "\n" in event or "\r" in event:
        raise ValueError("an SSE event name is one line")
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines += [f"data: {line}" for line in data.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    return ("\n".join(lines) + "\n\n").encode()


#: A comment line: keeps proxies and the browser's connection alive, and finds dead clients.
SSE_KEEPALIVE: Final = b": keepalive\n\n"
#: Tells the browser how soon to reconnect (ms) after the stream ends.
SSE_RETRY: Final = b"retry: 2000\n\n"
