"""The web view's server without a browser: token, methods, SSE framing, the client cap, closed clients.

The server runs on its own event loop in a thread; the tests speak HTTP to it over
plain sockets, so what they see is what is on the wire.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import ConfigError, parse_config
from agent.core.records import make_card, sign_record
from agent.state.identity import generate_identity
from agent.web import server as server_module
from agent.web.documents import agent_document, fleet_document, record_summary
from agent.web.http import HttpError, parse_head, sse_frame
from agent.web.hub import Hub
from agent.web.server import ViewServer
from agent.web.settings import ListenAddressError, ViewSettings, parse_listen
from agent.web.token import TokenFileError, load_or_create_token, token_path

TOKEN = "t0ken-t0ken-t0ken-t0ken"


def peer(key: str, name: str, hops: int, connections: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "peer_key_string": key,
        "device_name": name,
        "os": "Linux",
        "agent_version": "0.1.0",
        "hops": hops,
        "connections": connections or [],
        "peer_metadata": {"room": name},
        "identity_service_metadata": {},
    }


LINK = {
    "id": "pkA<->pkB:WebSocket",
    "peer_key_string1": "pkA",
    "peer_key_string2": "pkB",
    "connection_type": "WebSocket",
    "approximate_distance_in_meters": None,
}
GRAPH = {"local_peer": peer("pkA", "alpha", 0, [LINK]), "remote_peers": [peer("pkB", "beta", 1, [LINK])]}


class Running:
    """A :class:`ViewServer` on its own loop in a thread."""

    def __init__(self, token: str | None, host: str = "127.0.0.1", max_clients: int = 4) -> None:
        self.loop = asyncio.new_event_loop()
        self.hub: Hub
        self.server: ViewServer
        started = threading.Event()

        async def main() -> None:
            self.hub = Hub()
            self.server = ViewServer(
                self.hub, parse_listen(f"{host}:0"), token=token, max_clients=max_clients
            )
            await self.server.start()
            started.set()

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(main(), self.loop).result(5)
        assert started.is_set()
        self.port = self.server.port

    def call(self, fn: Callable[[], Any]) -> Any:
        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(5)

    def publish(self, document: dict[str, Any]) -> None:
        self.call(lambda: self.hub.publish(document))

    def streams(self) -> int:
        count: int = self.call(lambda: self.server.stats.streams)
        return count

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def open_server() -> Iterator[Running]:
    running = Running(token=None)
    running.publish(agent_document(GRAPH))
    yield running
    running.close()


@pytest.fixture
def guarded_server() -> Iterator[Running]:
    running = Running(token=TOKEN, host="0.0.0.0")
    running.publish(agent_document(GRAPH))
    yield running
    running.close()


def exchange(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    """Send ``request``, read the whole answer (the server closes after it)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def get(port: int, path: str, *headers: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    lines = [f"{method} {path} HTTP/1.1", "Host: x", *headers, "", ""]
    answer = exchange(port, "\r\n".join(lines).encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split(" ")[1]), {k.lower(): v for k, v in fields.items()}, body


def open_stream(port: int, *headers: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall("\r\n".join(["GET /events HTTP/1.1", "Host: x", *headers, "", ""]).encode())
    return sock


def read_events(sock: socket.socket, count: int) -> tuple[bytes, list[dict[str, str]]]:
    """The response head and the first ``count`` events (fields per event; comments skipped)."""
    data = b""
    while b"\r\n\r\n" not in data or data.partition(b"\r\n\r\n")[2].count(b"\n\n") < count + 1:  # + retry:
        chunk = sock.recv(65536)
        assert chunk, f"the stream closed early: {data[-200:]!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    events = []
    for block in rest.decode().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line and not line.startswith(":"):
                name, _, value = line.partition(": ")
                fields[name] = fields[name] + "\n" + value if name in fields else value
        if "event" in fields:
            events.append(fields)
    return head, events[:count]


def wait_for(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# ---------------------------------------------------------------- routes and methods


def test_the_page_and_its_files_are_served_with_a_strict_policy(open_server: Running) -> None:
    status, headers, body = get(open_server.port, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert b'<script src="app.js">' in body and b"https://" not in body  # nothing from elsewhere
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    for path, kind in (("/app.js", "text/javascript"), ("/style.css", "text/css")):
        status, headers, body = get(open_server.port, path)
        assert status == 200 and headers["content-type"].startswith(kind) and len(body) > 1000
    status, headers, body = get(open_server.port, "/graph.json")
    assert status == 200 and json.loads(body)["peers"][1]["name"] == "beta"
    assert get(open_server.port, "/nothing-here")[0] == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
def test_only_get_is_allowed(open_server: Running, method: str) -> None:
    status, headers, _ = get(open_server.port, "/", "Content-Length: 0", method=method)
    assert status == 405 and headers["allow"] == "GET"


def test_a_malformed_or_oversized_request_is_refused(open_server: Running) -> None:
    assert exchange(open_server.port, b"nonsense\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    huge = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n"
    assert exchange(open_server.port, huge).startswith(b"HTTP/1.1 431 ")


def test_a_request_too_slow_to_arrive_is_closed(
    open_server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "REQUEST_TIMEOUT", 0.2)
    with socket.create_connection(("127.0.0.1", open_server.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")  # and nothing more
        assert sock.recv(4096).startswith(b"HTTP/1.1 408 ")


# ---------------------------------------------------------------- the token


def test_beyond_loopback_every_route_needs_the_token(guarded_server: Running) -> None:
    port = guarded_server.port
    for path in ("/", "/app.js", "/graph.json", "/events"):
        status, headers, _ = get(port, path)
        assert status == 401, path
        assert "bearer" in headers["www-authenticate"].lower()
        assert get(port, path + "?token=nope-nope-nope-nope")[0] == 403
    assert get(port, "/graph.json", "X-Presence-Token: wrong")[0] == 403
    assert get(port, "/graph.json", f"X-Presence-Token: {TOKEN}")[0] == 200
    assert get(port, "/graph.json", f"Authorization: Bearer {TOKEN}")[0] == 200
    assert get(port, "/graph.json", f"Cookie: presence_view_token={TOKEN}")[0] == 200
    status, headers, _ = get(port, f"/?token={TOKEN}")
    assert status == 200
    assert headers["set-cookie"].startswith(f"presence_view_token={TOKEN};")
    assert "HttpOnly" in headers["set-cookie"] and "SameSite=Strict" in headers["set-cookie"]


def test_loopback_needs_no_token_but_anything_else_must_have_one() -> None:
    assert parse_listen("127.0.0.1:0").loopback and parse_listen("[::1]:8470").loopback
    assert not parse_listen("0.0.0.0:8470").loopback and not parse_listen("192.0.2.7:1").loopback
    with pytest.raises(ValueError, match="needs a token"):
        ViewServer(Hub(), parse_listen("0.0.0.0:0"), token=None)


def test_the_token_file_is_made_once_private_and_then_reused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    token = load_or_create_token(state)
    assert len(token) >= 40 and token_path(state).stat().st_mode & 0o777 == 0o600
    assert load_or_create_token(state) == token
    os.chmod(token_path(state), 0o644)
    with pytest.raises(TokenFileError, match="readable by others"):
        load_or_create_token(state)
    token_path(state).write_text("short\n")
    os.chmod(token_path(state), 0o600)
    with pytest.raises(TokenFileError, match="holds no token"):
        load_or_create_token(state)


# ---------------------------------------------------------------- server-sent events


def test_sse_framing_puts_each_line_of_data_on_its_own_data_line() -> None:
    assert sse_frame("graph", '{"a":1}', 7) == b'event: graph\nid: 7\ndata: {"a":1}\n\n'
    assert sse_frame("x", "one\ntwo\r\nthree") == b"event: x\ndata: one\ndata: two\ndata: three\n\n"
    with pytest.raises(ValueError):
        sse_frame("bad\nname", "")


def test_a_stream_sends_the_newest_document_then_every_new_one(open_server: Running) -> None:
    with open_stream(open_server.port) as sock:
        head, [first] = read_events(sock, 1)
        assert head.startswith(b"HTTP/1.1 200 ") and b"Content-Type: text/event-stream" in head
        assert first["event"] == "graph" and first["id"] == "1"
        document = json.loads(first["data"])
        assert document["version"] == 1 and document["self"] == "pkA"
        assert [p["name"] for p in document["peers"]] == ["alpha", "beta"]
        open_server.publish({**agent_document(GRAPH), "title": "renamed"})
        _, events = read_events_more(sock, 1)
        assert events[0]["id"] == "2" and json.loads(events[0]["data"])["title"] == "renamed"


def read_events_more(sock: socket.socket, count: int) -> tuple[bytes, list[dict[str, str]]]:
    data = b""
    while data.count(b"\n\n") < count:
        chunk = sock.recv(65536)
        assert chunk
        data += chunk
    events = []
    for block in data.decode().strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if line and not line.startswith(":"))
        if "event" in fields:
            events.append(fields)
    return b"", events


def test_the_number_of_streams_is_capped_and_a_freed_place_is_reused(open_server: Running) -> None:
    streams = [open_stream(open_server.port) for _ in range(4)]
    try:
        for sock in streams:
            read_events(sock, 1)
        assert open_server.streams() == 4
        refused = exchange(open_server.port, b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        assert refused.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 5" in refused
        assert b"limit" in refused
        streams.pop().close()
        wait_for(lambda: open_server.streams() == 3)
        streams.append(open_stream(open_server.port))
        read_events(streams[-1], 1)
    finally:
        for sock in streams:
            sock.close()


def test_a_closed_client_is_freed_at_once_without_waiting_for_a_write(open_server: Running) -> None:
    sock = open_stream(open_server.port)
    read_events(sock, 1)
    assert open_server.streams() == 1
    closed_at = time.monotonic()
    sock.close()
    wait_for(lambda: open_server.streams() == 0, timeout=1.0)  # no document was published meanwhile
    assert time.monotonic() - closed_at < 1.0
    # No task of the stream is left (its reader, its hub wait): only this check's own task runs.
    left = open_server.call(lambda: asyncio.all_tasks(open_server.loop) - {asyncio.current_task()})
    assert left == set()


def test_a_client_that_stops_reading_is_dropped(
    open_server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_module, "SEND_TIMEOUT", 0.3)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", open_server.port))
    sock.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        wait_for(lambda: open_server.streams() == 1)
        big = {**agent_document(GRAPH), "title": "x" * 2_000_000}
        for _ in range(4):  # never read: the send buffer fills, drain times out
            open_server.publish(big)
            time.sleep(0.1)
        wait_for(lambda: open_server.streams() == 0, timeout=5.0)
    finally:
        sock.close()


# ---------------------------------------------------------------- documents and settings


def test_an_agent_graph_becomes_one_document_with_each_link_once_and_record_counters() -> None:
    identity = generate_identity()
    record = sign_record(
        identity.private_key, identity.public_key, 42, 2_000_000_000, make_card("a", "L", "1", {})
    )
    import base64

    graph = {
        **GRAPH,
        "local_peer": {**GRAPH["local_peer"], "signed_records": [base64.b64encode(record.raw).decode()]},
    }
    document = agent_document(graph)
    assert document["kind"] == "agent" and document["self"] == "pkA" and document["title"] == "alpha"
    assert document["links"] == [
        {"id": LINK["id"], "a": "pkA", "b": "pkB", "type": "WebSocket", "distance": None}
    ]
    assert document["peers"][0]["records"] == [{"kind": "card", "counter": 42, "expiry": 2_000_000_000}]
    assert record_summary("not base64!") is None and record_summary("AAAA") is None


def test_a_fleet_graph_becomes_the_same_shape_with_seen_by_and_rejections() -> None:
    fleet = {
        "agents": [{"peer_key_string": "pkA", "online": True, "peer_count": 2}],
        "peers": [
            {
                "peer_key_string": "pkA",
                "device_name": "alpha",
                "os": "Linux",
                "agent_version": "0.1.0",
                "peer_metadata": {},
                "seen_by": ["pkA"],
                "card_counter": 3,
                "links_counter": None,
            }
        ],
        "connections": [],
    }
    rejection = {"topic": "t", "agent": "pkZ", "peer": "pkA", "reason": "bad_signature", "detail": "d"}
    document = fleet_document(fleet, [rejection])
    assert document["kind"] == "fleet" and document["self"] is None
    [shown] = document["peers"]
    assert shown["seen_by"] == ["pkA"] and shown["agent"] == {"online": True, "peer_count": 2}
    assert shown["records"] == [{"kind": "card", "counter": 3, "expiry": None}]
    assert document["rejections"] == [rejection]


@pytest.mark.parametrize(
    "text", ["8470", "localhost:8470", "127.0.0.1", "127.0.0.1:99999", "::1:8470", "1.2.3.4:x", ""]
)
def test_a_bad_listen_address_is_a_typed_one_line_error(text: str) -> None:
    with pytest.raises(ListenAddressError, match=r"expected ADDR:PORT|is not an IP address"):
        parse_listen(text)


def test_the_view_table_is_validated_like_every_other() -> None:
    assert parse_config("", "x.toml").view == ViewSettings()
    config = parse_config('[view]\nenabled = true\nlisten = "0.0.0.0:9000"\nmax_clients = 3\n', "x.toml")
    assert config.view == ViewSettings(enabled=True, listen="0.0.0.0:9000", max_clients=3)
    for bad, message in (
        ('listen = "somewhere"', 'x.toml: view.listen: expected an address "ADDR:PORT"'),
        ("max_clients = 0", "x.toml: view.max_clients: expected an integer in 1..256, got 0"),
        ('enabled = "yes"', 'x.toml: view.enabled: expected true or false, got "yes"'),
        ("port = 1", "x.toml: view.port: unknown key"),
    ):
        with pytest.raises(ConfigError) as caught:
            parse_config(f"[view]\n{bad}\n", "x.toml")
        assert str(caught.value).startswith(message), str(caught.value)


def test_parse_head_reads_path_query_headers_and_cookies() -> None:
    request = parse_head(
        b"GET /events?token=a%20b&x=1 HTTP/1.1\r\nCookie: k=v; presence_view_token=T\r\n\r\n"
    )
    assert request.path == "/events" and request.query == {"token": "a b", "x": "1"}
    assert request.cookie("presence_view_token") == "T" and request.cookie("none") is None
    with pytest.raises(HttpError):
        parse_head(b"GET /\r\n\r\n")
