"""The control socket and the CLI under hostile or careless local clients (issue 13, items 6-8).

Against real ``presence-agent run`` processes on loopback, each with its own
state directory (see ``lan_support``). The policies under test:

- **Sizes** (item 6): a request over the control socket's limit, or metadata
  over its 4096-byte limit, is refused with one line giving the size and the
  limit, changes nothing, and the CLI exits 2; the CLI never reports success
  when the agent closed the connection or did not answer (exit 1, one line).
- **Clients** (item 7): a ``watch`` whose client closes releases its observer
  thread at once; a client that sends no request line within the request
  timeout is answered ``timeout`` and closed; at most ``MAX_CLIENTS`` clients
  are served at once, the next are answered ``busy`` and closed (logged
  rate-limited).
- **Malformed input** (item 8): every request line the agent cannot use gets
  an ``{"ok": false, "kind": "invalid"}`` reply, never a logged traceback;
  the CLI prints one line, never a traceback.

The long forms (10,000 watch cycles, 10,000 idle clients) are marked slow and
print their thread and fd figures (``pytest -m slow -s tests/test_control.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lan_support import Mesh, Proc, cli, wait_until

from agent.core.limits import MAX_METADATA_JSON_BYTES
from agent.runtime.control import MAX_CLIENTS, MAX_REQUEST_BYTES, REQUEST_TIMEOUT, socket_path

ORIGINAL = {"role": "original"}


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    with Mesh(tmp_path) as m:
        yield m


@pytest.fixture
def agent(mesh: Mesh) -> Proc:
    """One agent, alone on its multicast port (a quiet mesh), with metadata ``ORIGINAL``."""
    proc = mesh.start_agent("control")
    result = cli("metadata", "set", json.dumps(ORIGINAL), "--state-dir", str(proc.state))
    assert result.returncode == 0, result.stderr
    return proc


# ---------------------------------------------------------------- helpers


def one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """A failed CLI call's stderr, checked to be exactly one line, no traceback, exit ``code``."""
    assert result.returncode == code, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("presence-agent: "), lines[0]
    return lines[0]


def metadata_of(proc: Proc) -> Any:
    result = cli("metadata", "get", "--state-dir", str(proc.state))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def connect(proc: Proc, timeout: float = 5.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(socket_path(proc.state)))  # blocking: waits while the accept backlog is full
    sock.settimeout(timeout)
    return sock


def read_line(sock: socket.socket) -> bytes:
    """Everything up to the first newline (or the end of the stream)."""
    data = b""
    while not data.endswith(b"\n"):
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:  # closed with our request unread: what came before stands
            break
        if not chunk:
            break
        data += chunk
    return data


def exchange(proc: Proc, line: bytes, timeout: float = 10.0) -> dict[str, Any]:
    """Send one raw request line, return the parsed reply (which must come, even when the agent
    refuses before reading it all: a busy agent closes at once)."""
    with connect(proc, timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(line)
        reply = read_line(sock)
    assert reply.endswith(b"\n"), f"no reply line to {line[:80]!r}: {reply[:200]!r}"
    answer: dict[str, Any] = json.loads(reply)
    return answer


def threads_of(proc: Proc) -> int:
    for row in Path(f"/proc/{proc.popen.pid}/status").read_text().splitlines():
        if row.startswith("Threads:"):
            return int(row.split()[1])
    raise AssertionError("no Threads: line")


def fds_of(proc: Proc) -> int:
    return len(os.listdir(f"/proc/{proc.popen.pid}/fd"))


def still_serving(proc: Proc) -> None:
    """The agent is alive, answers, and logged no traceback or unhandled exception."""
    assert proc.alive
    assert exchange(proc, b'{"op": "status"}\n')["ok"] is True
    log = proc.stderr_text()
    for bad in ("Traceback", "Unhandled", "exception"):
        assert bad not in log, log[-3000:]


def metadata_file(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    """A metadata object whose compact JSON is exactly ``size`` bytes."""
    text = json.dumps({"blob": ""}, separators=(",", ":"))
    data = json.dumps({"blob": "x" * (size - len(text))}, separators=(",", ":")).encode()
    assert len(data) == size
    path = tmp_path / f"metadata-{size}.json"
    path.write_bytes(data)
    return path, data


# ---------------------------------------------------------------- item 6: sizes


@pytest.mark.parametrize("size", [1_000_000, 400_000, 100_000, 5_000, MAX_METADATA_JSON_BYTES + 1])
def test_metadata_over_the_limit_is_one_line_with_size_and_limit_and_changes_nothing(
    agent: Proc, tmp_path: Path, size: int
) -> None:
    path, _ = metadata_file(tmp_path, size)
    error = one_line_error(cli("metadata", "set", "--file", str(path), "--state-dir", str(agent.state)), 2)
    assert f"{size} bytes" in error and f"{MAX_METADATA_JSON_BYTES} bytes" in error, error
    assert metadata_of(agent) == ORIGINAL
    still_serving(agent)


def test_metadata_at_the_json_limit_is_refused_by_the_card_budget_with_one_line(
    agent: Proc, tmp_path: Path
) -> None:
    # 4096 bytes of JSON pass the JSON limit, but the card carrying them would be over 4096 bytes.
    path, _ = metadata_file(tmp_path, MAX_METADATA_JSON_BYTES)
    error = one_line_error(cli("metadata", "set", "--file", str(path), "--state-dir", str(agent.state)), 2)
    assert "signed card" in error and "limit is 4096 bytes" in error, error
    assert metadata_of(agent) == ORIGINAL
    still_serving(agent)


def test_metadata_that_fits_is_set(agent: Proc, tmp_path: Path) -> None:
    path, data = metadata_file(tmp_path, 3000)
    result = cli("metadata", "set", "--file", str(path), "--state-dir", str(agent.state))
    assert (result.returncode, result.stderr) == (0, "")
    assert metadata_of(agent) == json.loads(data)


@pytest.mark.parametrize("size", [1_000_000, 400_000, 100_000])
def test_the_agent_answers_an_oversized_request_line_with_its_size_and_the_limit(
    agent: Proc, size: int
) -> None:
    padding = size - len(b'{"op":"metadata_set","json":""}')
    line = json.dumps({"op": "metadata_set", "json": "x" * padding}, separators=(",", ":")).encode()
    assert len(line) == size
    answer = exchange(agent, line + b"\n")
    assert answer["ok"] is False and answer["kind"] == "invalid", answer
    assert f"{size} bytes" in answer["error"] and f"{MAX_REQUEST_BYTES} bytes" in answer["error"], answer
    assert metadata_of(agent) == ORIGINAL
    still_serving(agent)


def test_the_agent_answers_metadata_over_its_limit_sent_directly(agent: Proc) -> None:
    text = json.dumps({"blob": "x" * 5000})
    answer = exchange(agent, json.dumps({"op": "metadata_set", "json": text}).encode() + b"\n")
    assert answer == {
        "ok": False,
        "error": f"metadata JSON is {len(text)} bytes; the limit is 4096 bytes. Nothing was changed.",
        "kind": "invalid",
    }
    assert metadata_of(agent) == ORIGINAL


class FakeAgent:
    """A control socket that misbehaves: ``behaviour`` gets each accepted connection."""

    def __init__(self, state_dir: Path, behaviour: str) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(socket_path(state_dir)))
        self.server.listen(8)
        self.behaviour = behaviour
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.server.accept()
                with conn:
                    if self.behaviour == "read-then-close":
                        conn.recv(65536)
                    elif self.behaviour == "half-line":
                        conn.recv(65536)
                        conn.sendall(b'{"ok": tr')
                    elif self.behaviour == "silent":
                        conn.recv(65536)
                        time.sleep(12)
                    # "close": closes at once, before reading anything

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.server.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        self.server.close()


@pytest.mark.parametrize("behaviour", ["close", "read-then-close", "half-line"])
def test_the_cli_never_reports_success_when_the_agent_closes_without_answering(
    tmp_path: Path, behaviour: str
) -> None:
    state = tmp_path / "state"
    fake = FakeAgent(state, behaviour)
    try:
        big = json.dumps({"blob": "x" * 4000})  # a request bigger than the socket buffer's first read
        for args in (["metadata", "set", '{"role":"x"}'], ["metadata", "set", big], ["graph"]):
            error = one_line_error(cli(*args, "--state-dir", str(state)), 1)
            assert "without answering" in error or "malformed answer" in error, error
    finally:
        fake.close()


def test_the_cli_reports_an_agent_that_does_not_answer(tmp_path: Path) -> None:
    state = tmp_path / "state"
    fake = FakeAgent(state, "silent")
    try:
        error = one_line_error(cli("metadata", "set", '{"role":"x"}', "--state-dir", str(state)), 1)
        assert "did not answer within 10 s" in error, error
    finally:
        fake.close()


# ---------------------------------------------------------------- item 7: clients


def watch_cycles(proc: Proc, cycles: int, batch: int = MAX_CLIENTS // 2) -> int:
    """``cycles`` watch connections opened ``batch`` at a time, each closed once it got its first
    graph (its observer exists then); returns the highest thread count seen while they were open.

    Half the client limit at a time, so the batch before (closed, but perhaps not yet noticed by
    the agent) never makes this one busy."""
    peak = 0
    done = 0
    while done < cycles:
        socks = [connect(proc) for _ in range(min(batch, cycles - done))]
        for sock in socks:
            sock.sendall(b'{"op": "watch"}\n')
        for sock in socks:
            answer = json.loads(read_line(sock))
            assert answer["ok"] is True, answer
        peak = max(peak, threads_of(proc))
        for sock in socks:
            sock.close()
        done += len(socks)
    return peak


def settles(proc: Proc, threads: int, fds: int, timeout: float) -> tuple[int, int]:
    """Waits until the agent is back to at most ``threads`` threads and ``fds`` fds; returns its counts."""

    def back() -> tuple[int, int] | None:
        now = threads_of(proc), fds_of(proc)
        return now if now[0] <= threads and now[1] <= fds else None

    try:
        return wait_until(back, timeout, f"threads <= {threads} and fds <= {fds}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; now {threads_of(proc)} threads, {fds_of(proc)} fds") from None


def test_closed_watch_clients_release_their_observer_threads_at_once(agent: Proc) -> None:
    idle_threads, idle_fds = threads_of(agent), fds_of(agent)
    started = time.monotonic()
    peak = watch_cycles(agent, 300)
    closed = time.monotonic()
    # In a quiet mesh no graph changes: only noticing the closed socket can release them.
    threads, fds = settles(agent, idle_threads, idle_fds, timeout=2.0)
    settled = time.monotonic() - closed
    print(
        f"\n300 watch cycles in {closed - started:.2f} s: idle {idle_threads} threads / {idle_fds} fds, "
        f"peak {peak} threads, back to {threads} / {fds} within {settled:.2f} s"
    )
    assert peak <= idle_threads + MAX_CLIENTS // 2
    still_serving(agent)


def open_idle(proc: Proc, count: int) -> list[socket.socket]:
    return [connect(proc, timeout=REQUEST_TIMEOUT + 5) for _ in range(count)]


def replies(socks: list[socket.socket], timeout: float) -> dict[socket.socket, dict[str, Any]]:
    """The reply line each socket gets, up to ``timeout`` s; every socket must also reach EOF."""
    got: dict[socket.socket, bytes] = {s: b"" for s in socks}
    closed: set[socket.socket] = set()
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while len(closed) < len(socks) and (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    chunk = sock.recv(4096)
                except ConnectionResetError:
                    chunk = b""
                if chunk:
                    got[sock] += chunk
                else:
                    closed.add(sock)
                    selector.unregister(sock)
    assert len(closed) == len(socks), f"{len(socks) - len(closed)} of {len(socks)} not closed by the agent"
    return {s: json.loads(got[s]) for s in socks}


def test_idle_clients_are_answered_and_closed_after_the_request_timeout(agent: Proc) -> None:
    idle_threads, idle_fds = threads_of(agent), fds_of(agent)
    started = time.monotonic()
    socks = open_idle(agent, 200)
    try:
        answers = replies(socks, timeout=REQUEST_TIMEOUT + 3)
        elapsed = time.monotonic() - started
        kinds = [a["kind"] for a in answers.values()]
        # The first MAX_CLIENTS are served (and time out); the rest are refused at once.
        assert kinds.count("timeout") == MAX_CLIENTS and kinds.count("busy") == 200 - MAX_CLIENTS, kinds
        assert all(a["ok"] is False for a in answers.values())
        assert REQUEST_TIMEOUT - 0.5 <= elapsed <= REQUEST_TIMEOUT + 3
        timed_out = next(a for a in answers.values() if a["kind"] == "timeout")
        assert timed_out["error"] == f"no request line within {REQUEST_TIMEOUT:g} s; closing"
    finally:
        for sock in socks:
            sock.close()
    threads, fds = settles(agent, idle_threads, idle_fds, timeout=2.0)
    print(f"\n200 idle clients: all closed by the agent after {elapsed:.2f} s; back to {threads} / {fds}")
    still_serving(agent)


def test_clients_beyond_the_limit_are_refused_with_one_line_and_served_again_once_slots_free(
    agent: Proc,
) -> None:
    held = open_idle(agent, MAX_CLIENTS)
    try:
        # The agent counts a client once it accepted it: wait until all are in.
        wait_until(lambda: exchange(agent, b"{}\n").get("kind") == "busy", 5, "all slots to be taken")
        for _ in range(20):
            answer = exchange(agent, b'{"op": "status"}\n')
            assert answer["kind"] == "busy" and f"{MAX_CLIENTS} control clients" in answer["error"], answer
        error = one_line_error(cli("graph", "--state-dir", str(agent.state)), 1)
        assert f"serving {MAX_CLIENTS} control clients" in error, error
    finally:
        for sock in held:
            sock.close()
    # Closing frees the slots at once, not at the timeout.
    wait_until(lambda: exchange(agent, b'{"op": "status"}\n').get("ok"), 1.0, "a free slot")
    refusals = [line for line in agent.stderr_text().splitlines() if "refused" in line]
    assert len(refusals) == 1, refusals  # rate-limited: one line for the whole burst
    assert f"{MAX_CLIENTS} are connected, the limit" in refusals[0]


# ---------------------------------------------------------------- item 8: malformed input


def test_a_metadata_file_that_is_not_utf8_is_one_line_naming_the_file(agent: Proc, tmp_path: Path) -> None:
    path = tmp_path / "latin1.json"
    path.write_bytes('{"place": "Zürich"}'.encode("latin-1"))
    error = one_line_error(cli("metadata", "set", "--file", str(path), "--state-dir", str(agent.state)), 2)
    assert str(path) in error and "not UTF-8" in error, error
    assert metadata_of(agent) == ORIGINAL
    still_serving(agent)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[" * 1000 + "]" * 1000, "not valid JSON"),
        ('{"a":' * 1000 + "1" + "}" * 1000, "JSON"),
        ('{"a":' * 20 + "1" + "}" * 20, "deeper than 16 levels"),
        ('{"role": NaN}', "NaN"),
    ],
    ids=["array-1000-deep", "object-1000-deep", "object-20-deep", "nan"],
)
def test_metadata_the_agent_would_refuse_is_one_line_from_the_cli(
    agent: Proc, text: str, expected: str
) -> None:
    error = one_line_error(cli("metadata", "set", text, "--state-dir", str(agent.state)), 2)
    assert expected in error, error
    assert metadata_of(agent) == ORIGINAL
    still_serving(agent)


MALFORMED = {
    "nested-1000-array": b"[" * 1000 + b"]" * 1000,
    "nested-1000-in-op": b'{"op": ' + b"[" * 1000 + b"]" * 1000 + b"}",
    "unclosed-60000-deep": b"[" * 60000,
    "not-json": b"hello agent",
    "not-utf8": b'{"op": "graph\xff"}',
    "utf16": '{"op": "graph"}'.encode("utf-16"),
    "empty-line": b"",
    "array": b'["graph"]',
    "string": b'"graph"',
    "no-op": b"{}",
    "op-not-a-string": b'{"op": 5}',
    "unknown-op": b'{"op": "shutdown"}',
    "metadata-without-json": b'{"op": "metadata_set"}',
    "metadata-json-not-a-string": b'{"op": "metadata_set", "json": {"role": "x"}}',
    "metadata-not-an-object": b'{"op": "metadata_set", "json": "[1]"}',
    "metadata-nested-1000": json.dumps({"op": "metadata_set", "json": "[" * 1000 + "]" * 1000}).encode(),
}


@pytest.mark.parametrize("line", list(MALFORMED.values()), ids=list(MALFORMED))
def test_a_malformed_request_gets_an_invalid_reply_and_the_agent_keeps_serving(
    agent: Proc, line: bytes
) -> None:
    answer = exchange(agent, line + b"\n")
    assert answer["ok"] is False and answer["kind"] == "invalid", answer
    assert isinstance(answer["error"], str) and "\n" not in answer["error"] and len(answer["error"]) < 300
    assert metadata_of(agent) == ORIGINAL
    still_serving(agent)


def test_a_request_without_a_newline_is_still_answered(agent: Proc) -> None:
    with connect(agent) as sock:
        sock.sendall(b'{"op": "metadata_get"}')
        sock.shutdown(socket.SHUT_WR)
        assert json.loads(read_line(sock)) == {"ok": True, "metadata": ORIGINAL}


# ---------------------------------------------------------------- long forms


@pytest.mark.slow
def test_long_form_10000_watch_cycles_leave_threads_and_fds_at_the_idle_level(agent: Proc) -> None:
    idle_threads, idle_fds = threads_of(agent), fds_of(agent)
    started = time.monotonic()
    peak = watch_cycles(agent, 10_000)
    closed = time.monotonic()
    threads, fds = settles(agent, idle_threads, idle_fds, timeout=2.0)
    print(
        f"\n10,000 watch cycles in {closed - started:.1f} s: idle {idle_threads} threads / {idle_fds} fds, "
        f"peak {peak} threads, back to {threads} / {fds} within {time.monotonic() - closed:.2f} s"
    )
    still_serving(agent)


@pytest.mark.slow
def test_long_form_10000_idle_clients_are_all_closed_and_fds_stay_bounded(agent: Proc) -> None:
    idle_threads, idle_fds = threads_of(agent), fds_of(agent)
    peak_fds = peak_threads = held_fds = 0
    started = time.monotonic()
    for _ in range(10):  # 1,000 at a time: MAX_CLIENTS held to the timeout, the rest refused at once
        socks = open_idle(agent, 1000)
        peak_fds, peak_threads = max(peak_fds, fds_of(agent)), max(peak_threads, threads_of(agent))
        time.sleep(2)  # the refusals are done: what is left is what the agent holds
        held_fds = max(held_fds, fds_of(agent))
        try:
            kinds = [a["kind"] for a in replies(socks, timeout=REQUEST_TIMEOUT + 5).values()]
        finally:
            for sock in socks:
                sock.close()
        assert kinds.count("timeout") <= MAX_CLIENTS and kinds.count("busy") >= 1000 - MAX_CLIENTS
    threads, fds = settles(agent, idle_threads, idle_fds, timeout=2.0)
    print(
        f"\n10,000 idle clients in {time.monotonic() - started:.1f} s: idle {idle_threads} threads / "
        f"{idle_fds} fds; peak {peak_threads} threads / {peak_fds} fds (refusals in flight), "
        f"{held_fds} fds once refused; back to {threads} / {fds}"
    )
    assert held_fds <= idle_fds + MAX_CLIENTS + 8
    still_serving(agent)
