"""The LAN runtime with real ``presence-agent run`` processes on loopback.

Each test gets its own multicast port, so its agents see only each other.
Agents are driven through the CLI and the control socket, as an operator
would; every wait polls with a deadline (see ``lan_support``). ``pytest -s``
shows the measured times.
"""

from __future__ import annotations

import base64
import itertools
import json
import random
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lan_support import (
    REPO,
    Mesh,
    Proc,
    WirePeer,
    ask,
    beacon_listener,
    cli,
    graph_of,
    remote_keys,
    remote_peer,
    stats_of,
    tcp_port_from_beacons,
    view,
    wait_until,
)

from agent.core.keys import public_key_from_string
from agent.core.records import Card, Record, RecordKind, decode_record
from agent.core.wire import MessageType
from agent.state.identity import load_or_create_identity

#: ``[lan]`` defaults: a vanished peer leaves within dead_interval + departure_grace = 2.5 s.
DEPARTURE_LIMIT = 3.5
HANDLER_AGENT = REPO / "tests" / "_crashers" / "handler_agent.py"


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[Mesh]:
    with Mesh(tmp_path) as m:
        yield m


def sees_all(agents: list[Proc]) -> bool:
    """Every agent lists every other one, and nobody else, as a remote peer."""
    keys = {a.peer_key for a in agents}
    return all(remote_keys(graph_of(a)) == keys - {a.peer_key} for a in agents)


def sees_none_of(observers: list[Proc], gone: Proc) -> bool:
    return all(gone.peer_key not in remote_keys(graph_of(o)) for o in observers)


def agreed_view(agents: list[Proc], connections: int) -> tuple[frozenset[str], frozenset[str]] | None:
    """The one view (peer keys, connection ids) all agents share, once it has every agent
    and ``connections`` connections; None before."""
    views = {view(graph_of(a)) for a in agents}
    if len(views) != 1:
        return None
    (only,) = views
    return only if len(only[0]) == len(agents) and len(only[1]) == connections else None


def full_mesh(mesh: Mesh, *names: str, extra_config: str = "") -> list[Proc]:
    """Agents started together, returned once all see all and their graphs agree (all pairs linked)."""
    agents = [mesh.start_agent(n, wait=False, extra_config=extra_config) for n in names]
    for agent in agents:
        mesh.wait_ready(agent)
    wait_until(lambda: sees_all(agents), 10, "every agent to see every other")
    pairs = len(agents) * (len(agents) - 1) // 2
    wait_until(lambda: agreed_view(agents, pairs), 10, "the graphs to agree")
    return agents


def card_seen_by(observer: Proc, key: str) -> Record | None:
    """The verified card ``observer`` holds for peer ``key`` (from ``signed_records``), if it shows it."""
    peer = remote_peer(graph_of(observer), key)
    if peer is None:
        return None
    records = [decode_record(base64.b64decode(r)) for r in peer["signed_records"]]
    (card,) = [r for r in records if r.kind is RecordKind.CARD]
    assert isinstance(card.body, Card)
    assert dict(card.body.metadata) == peer["peer_metadata"]
    return card


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """A failed CLI call's stderr, checked to be one line with no traceback."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    text: str = lines[0]
    assert text.startswith("presence-agent: "), text
    return text


# ---------------------------------------------------------------- discovery, graphs, state files


def test_three_agents_see_each_other_and_agree(mesh: Mesh) -> None:
    names = ("lan-alpha", "lan-bravo", "lan-charlie")
    started = time.monotonic()
    agents = [mesh.start_agent(n, wait=False) for n in names]
    for agent in agents:
        mesh.wait_ready(agent)
    wait_until(lambda: sees_all(agents), 10, "three agents to see each other")
    elapsed = time.monotonic() - started
    print(f"\n3 agents on loopback: all see all {elapsed:.2f} s after launch")
    assert elapsed < 10

    # On one LAN every pair links directly: a triangle, the same in every graph.
    keys, connections = wait_until(lambda: agreed_view(agents, 3), 10, "the graphs to agree")
    assert keys == {a.peer_key for a in agents}

    # The same through the CLI an operator uses.
    for agent in agents:
        result = cli("graph", "--json", "--state-dir", str(agent.state))
        assert result.returncode == 0, result.stderr
        document = json.loads(result.stdout)
        assert document["local_peer"]["peer_key_string"] == agent.peer_key
        assert [p["hops"] for p in document["remote_peers"]] == [1, 1]
        assert view(document) == (keys, connections)
    table = cli("graph", "--state-dir", str(agents[0].state))
    assert table.returncode == 0, table.stderr
    assert all(name in table.stdout for name in names), table.stdout
    assert "2 remote peers" in table.stdout
    dot = cli("graph", "--dot", "--state-dir", str(agents[1].state))
    assert dot.returncode == 0, dot.stderr
    assert dot.stdout.startswith("graph presence")

    # Several agents on one host, side by side, each with its own private state directory.
    for agent in agents:
        assert stat.S_IMODE(agent.state.stat().st_mode) == 0o700
        sock = (agent.state / "control.sock").stat()
        assert stat.S_ISSOCK(sock.st_mode) and stat.S_IMODE(sock.st_mode) == 0o600
        assert stat.S_IMODE((agent.state / "identity.key").stat().st_mode) == 0o600
    for agent in agents:
        mesh.stop(agent)
        assert not (agent.state / "control.sock").exists()


# ---------------------------------------------------------------- metadata


def test_metadata_set_with_the_cli_reaches_the_others(mesh: Mesh) -> None:
    a, b, c = full_mesh(mesh, "meta-a", "meta-b", "meta-c")
    state = str(a.state)

    def others_show(metadata: dict[str, Any]) -> bool:
        return all(
            (peer := remote_peer(graph_of(o), a.peer_key)) is not None and peer["peer_metadata"] == metadata
            for o in (b, c)
        )

    started = time.monotonic()
    result = cli("metadata", "set", '{"role":"gateway"}', "--state-dir", state)
    assert result.returncode == 0, result.stderr
    wait_until(lambda: others_show({"role": "gateway"}), 5, "the metadata to reach the others")
    print(f"\nmetadata set with the CLI reached both others within {time.monotonic() - started:.2f} s")
    shown = json.loads(cli("graph", "--json", "--state-dir", str(c.state)).stdout)
    assert remote_peer(shown, a.peer_key)["peer_metadata"] == {"role": "gateway"}  # type: ignore[index]
    got = cli("metadata", "get", "--state-dir", state)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout) == {"role": "gateway"}

    invalid = one_line_error(cli("metadata", "set", '{"role":', "--state-dir", state))
    assert "not valid JSON" in invalid
    not_object = one_line_error(cli("metadata", "set", '["gateway"]', "--state-dir", state))
    assert "JSON object" in not_object
    big = json.dumps({"blob": "x" * 5000})
    too_big = one_line_error(cli("metadata", "set", big, "--state-dir", state))
    assert f"{len(big.encode())} bytes" in too_big and "4096" in too_big

    # Refused input changed nothing, here or anywhere else.
    assert json.loads(cli("metadata", "get", "--state-dir", state).stdout) == {"role": "gateway"}
    assert others_show({"role": "gateway"})
    assert a.alive


# ---------------------------------------------------------------- departures and restarts


def test_a_killed_agent_leaves_every_graph_within_the_dead_link_window(mesh: Mesh) -> None:
    a, b, c = full_mesh(mesh, "kill-a", "kill-b", "kill-c")
    killed_at = time.monotonic()
    mesh.kill(c)
    wait_until(lambda: sees_none_of([a, b], c), 10, "the killed agent to leave both graphs")
    elapsed = time.monotonic() - killed_at
    print(f"\nSIGKILLed agent left both other graphs {elapsed:.2f} s after the kill")
    assert elapsed < DEPARTURE_LIMIT
    wait_until(lambda: agreed_view([a, b], 1), 5, "the survivors' graphs to agree")
    mesh.stop(a)
    mesh.stop(b)


def test_a_frozen_agent_leaves_within_the_dead_interval_and_rejoins_when_thawed(mesh: Mesh) -> None:
    # A SIGKILLed process's sockets are closed by the kernel; a frozen one's stay open,
    # so only the dead interval (no frames for 2 s) can notice it is gone.
    a, b, c = full_mesh(mesh, "frozen-a", "frozen-b", "frozen-c")
    frozen_at = time.monotonic()
    c.popen.send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: sees_none_of([a, b], c), 10, "the frozen agent to leave both graphs")
        elapsed = time.monotonic() - frozen_at
        print(f"\nSIGSTOPped agent left both other graphs {elapsed:.2f} s after it froze")
        assert elapsed < DEPARTURE_LIMIT
    finally:
        c.popen.send_signal(signal.SIGCONT)
    wait_until(lambda: sees_all([a, b, c]), 10, "the thawed agent to rejoin")
    wait_until(lambda: agreed_view([a, b, c], 3), 10, "the graphs to agree again")
    for agent in (a, b, c):
        mesh.stop(agent)


def test_restart_keeps_identity_metadata_and_counter(mesh: Mesh) -> None:
    a, b, c = full_mesh(mesh, "restart-a", "restart-b", "restart-c")
    state = str(a.state)
    ask(a, {"op": "metadata_set", "json": '{"site":"north"}'})

    def card_with_metadata(observer: Proc) -> Record | None:
        card = card_seen_by(observer, a.peer_key)
        if card is None or not isinstance(card.body, Card) or dict(card.body.metadata) != {"site": "north"}:
            return None
        return card

    before = wait_until(lambda: card_with_metadata(b), 5, "the metadata to reach b")
    wait_until(lambda: card_with_metadata(c), 5, "the metadata to reach c")
    assert cli("keys", "show", "--state-dir", state).stdout.strip() == a.peer_key

    mesh.stop(a)  # SIGTERM: a clean stop, exit code 0
    wait_until(lambda: sees_none_of([b, c], a), 5, "the stopped agent to leave the others' graphs")
    assert cli("keys", "show", "--state-dir", state).stdout.strip() == a.peer_key

    again = mesh.restart(a)
    assert again.peer_key == a.peer_key
    assert json.loads(cli("metadata", "get", "--state-dir", state).stdout) == {"site": "north"}

    def newer_card(observer: Proc) -> Record | None:
        card = card_with_metadata(observer)
        return card if card is not None and card.counter > before.counter else None

    after = wait_until(lambda: newer_card(b), 10, "b to accept the restarted agent's new card")
    wait_until(lambda: newer_card(c), 10, "c to accept the restarted agent's new card")
    print(f"\ncard counter before the restart {before.counter}, after {after.counter}")
    wait_until(lambda: sees_all([again, b, c]), 10, "the restarted agent to see everyone again")
    wait_until(lambda: agreed_view([again, b, c], 3), 10, "the graphs to agree again")
    for agent in (again, b, c):
        mesh.stop(agent)


# ---------------------------------------------------------------- watch


def test_watch_json_prints_a_joined_line_when_a_second_agent_starts(mesh: Mesh) -> None:
    a = mesh.start_agent("watch-a")
    watcher = mesh.spawn(
        "watch",
        [sys.executable, "-m", "agent.cli", "watch", "--json", "--state-dir", str(a.state)],
        capture_stdout=True,
    )
    # Whether the watcher subscribes before or after b arrives, b shows up as "joined":
    # the first graph is reported against an empty one.
    b = mesh.start_agent("watch-b")
    events: list[dict[str, Any]] = []

    def saw_b_join() -> bool:
        while (line := watcher.next_line(0)) is not None:
            events.append(json.loads(line))  # every line is one JSON object
        return any(e["event"] == "joined" for e in events) and any(e["event"] == "link_up" for e in events)

    wait_until(saw_b_join, 10, "watch --json to report b joining")
    assert [e for e in events if e["event"] == "joined"] == [
        {"event": "joined", "peer": b.peer_key, "name": "watch-b", "hops": 1}
    ], events
    assert watcher.alive
    watcher.popen.send_signal(signal.SIGINT)  # Ctrl-C ends watch cleanly
    assert watcher.popen.wait(5) == 0, watcher.stderr_text()
    mesh.stop(b)
    mesh.stop(a)


# ---------------------------------------------------------------- connection request handler


def order_identities(mesh: Mesh, low: str, high: str) -> None:
    """Create both agents' identities so that ``low`` has the lower key (it dials, by the LAN rule)."""
    low_dir, high_dir = mesh.state_dir(low), mesh.state_dir(high)
    if load_or_create_identity(low_dir).public_key > load_or_create_identity(high_dir).public_key:
        swap = mesh.root / "swap"
        low_dir.rename(swap)
        high_dir.rename(low_dir)
        swap.rename(high_dir)


def start_handler_agent(mesh: Mesh, name: str, extra_config: str = "") -> Proc:
    """``handler_agent.py``: a BlockingAgent whose handler denies everyone and logs each request."""
    config = mesh.write_config(name, extra=extra_config)
    state_dir = mesh.state_dir(name)
    proc = mesh.spawn(
        name,
        [sys.executable, str(HANDLER_AGENT), str(config), str(state_dir), name],
        capture_stdout=True,
        state_dir=state_dir,
        config=config,
    )
    line = proc.next_line(15)
    assert line is not None and line.startswith("ready "), (line, proc.stderr_text())
    proc.peer_key = line.split()[1]
    return proc


def collect_requests(proc: Proc, into: list[float], until: float) -> None:
    """Append the handler agent's request times (its ``request <time> <key>`` lines) until ``until``."""
    while (left := until - time.monotonic()) > 0:
        line = proc.next_line(min(left, 0.1))
        if line is not None:
            word, when, _ = line.split()
            assert word == "request", line
            into.append(float(when))


def drain_requests(proc: Proc, into: list[float]) -> int:
    """Append the request times logged so far (without waiting); return how many there are now."""
    collect_requests(proc, into, time.monotonic() + 0.01)
    return len(into)


def gaps_of(times: list[float]) -> list[float]:
    return [round(later - earlier, 2) for earlier, later in itertools.pairwise(times)]


def test_a_denied_peer_stays_unlinked_and_retries_with_exponential_backoff(mesh: Mesh) -> None:
    # One retry series, so its gaps can be read off the handler's log. The denier has the
    # lower key, so it dials first; its own dial backoff is 30 s, so it dials only that
    # once. The denied agent then redials on its own, after the engine's deny backoff
    # (1 s, 2 s, 4 s, ... each plus up to 50 % jitter). Short beacon intervals keep the
    # denied side's wait before dialling a higher-key peer (4 beacon intervals) and its
    # wait for the denier's next beacon well below those delays.
    order_identities(mesh, "denier", "denied")
    fast = "beacon_interval = 0.1\n"
    denier = start_handler_agent(
        mesh, "denier", fast + "dial_backoff_initial = 30.0\ndial_backoff_max = 30.0\n"
    )
    denied = mesh.start_agent("denied", extra_config=fast)
    assert public_key_from_string(denier.peer_key) < public_key_from_string(denied.peer_key)
    started = time.monotonic()

    requests: list[float] = []
    collect_requests(denier, requests, started + 5.0)
    # 5 s on, the link is still down: neither side lists the other.
    assert remote_keys(graph_of(denied)) == set()
    assert remote_keys(graph_of(denier)) == set()
    assert len(requests) >= 2, requests
    assert requests[1] - requests[0] >= 0.9, gaps_of(requests)  # the deny backoff: >= 1 s
    # With the deny backoff, the third request (the denied side's second retry) comes
    # about 5 s after the first at the latest.
    wait_until(lambda: drain_requests(denier, requests) >= 3, 5, "a third connection request")
    gaps = gaps_of(requests)
    print(f"\nconnection requests the denying handler saw: gaps {gaps} s")
    assert gaps[1] > gaps[0], gaps  # the wait grows

    stats = stats_of(denied)
    assert stats.get("links.denied_by_remote", 0) >= 2, stats
    assert stats.get("links.established", 0) == 0, stats
    denier_stats = stats_of(denier)
    assert denier_stats.get("links.denied_locally", 0) >= 2, denier_stats
    assert denier_stats.get("links.established", 0) == 0, denier_stats
    assert remote_keys(graph_of(denied)) == set()
    mesh.stop(denied)
    mesh.stop(denier)


def test_a_denial_with_default_settings_keeps_the_link_down_and_retries_are_rate_limited(mesh: Mesh) -> None:
    # Default timings, whichever key is lower. Both sides may dial (the denier too, to be
    # denied by its own handler), so the log mixes two retry series; each backs off.
    denier = start_handler_agent(mesh, "denier")
    denied = mesh.start_agent("denied")
    requests: list[float] = []
    collect_requests(denier, requests, time.monotonic() + 6.5)
    print(f"\nconnection requests the denying handler saw (default settings): gaps {gaps_of(requests)} s")

    assert remote_keys(graph_of(denied)) == set()
    assert remote_keys(graph_of(denier)) == set()
    # Redialling at the beacon rate (0.5 s) would ask >= 10 times in 6 s from each side;
    # backing off (dials 0.5, 1, 2, 4 s; denials 1, 2, 4 s) asks at most ~8 times in all.
    assert 2 <= len(requests) <= 9, gaps_of(requests)
    assert stats_of(denied).get("links.denied_by_remote", 0) >= 2
    assert stats_of(denier).get("links.denied_locally", 0) >= 2
    mesh.stop(denied)
    mesh.stop(denier)


def test_a_denial_closes_the_connection_at_once_on_both_sides(mesh: Mesh) -> None:
    # Regression: the engine reports a link it closed (CloseLink) from inside
    # datagrams_to_send(); a runtime that handles events only before sending left the
    # denied connection open until some later wake-up, possibly never.
    with beacon_listener(mesh.multicast_port) as beacons:
        # The denying side: a handler agent denies a hand-made peer, then hangs up.
        denier = start_handler_agent(mesh, "denier")
        port = tcp_port_from_beacons(beacons, public_key_from_string(denier.peer_key))
        with connect(port) as sock:
            peer = WirePeer(sock)
            peer.handshake()
            kind, _ = peer.receive()
            assert kind is MessageType.DENY, kind
            denied_at = time.monotonic()
            closed = wait_closed(sock, denied_at + 2)
            print(f"\ndenier closed its end {time.monotonic() - denied_at:.2f} s after sending DENY")
            assert closed, "the denying agent kept the connection open after DENY"
        mesh.stop(denier)

        # The denied side: a plain agent admits the hand-made peer, which then denies it.
        plain = mesh.start_agent("plain")
        port = tcp_port_from_beacons(beacons, public_key_from_string(plain.peer_key))
    with connect(port) as sock:
        peer = WirePeer(sock)
        peer.handshake()
        kind, _ = peer.receive()
        assert kind is MessageType.ACCEPT, kind
        peer.send(MessageType.DENY)
        denied_at = time.monotonic()
        closed = wait_closed(sock, denied_at + 2)
        print(f"denied agent closed its end {time.monotonic() - denied_at:.2f} s after receiving DENY")
        assert closed, "the denied agent kept the connection open after DENY"
    assert stats_of(plain).get("links.denied_by_remote", 0) == 1
    mesh.stop(plain)


# ---------------------------------------------------------------- hostile input over TCP


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def wait_closed(sock: socket.socket, deadline: float) -> bool:
    """Read (and discard) what the agent sends until it closes ``sock``; False if open at ``deadline``."""
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def test_hostile_tcp_input_is_dropped_and_counted_while_the_mesh_keeps_working(mesh: Mesh) -> None:
    with beacon_listener(mesh.multicast_port) as beacons:
        target, friend = full_mesh(mesh, "target", "friend", extra_config="handshake_timeout = 1.0\n")
        port = tcp_port_from_beacons(beacons, public_key_from_string(target.peer_key))
    before = stats_of(target)
    rng = random.Random(7)
    closed_after: dict[str, float | None] = {}

    def attack(name: str, data: bytes, limit: float) -> None:
        with connect(port) as sock:
            opened = time.monotonic()
            if data:
                sock.sendall(data)
            closed = wait_closed(sock, opened + limit)
            closed_after[name] = time.monotonic() - opened if closed else None

    # (a) garbage: an HTTP request (its first 4 bytes read as a 1.2 GB length) ...
    attack("http", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + rng.randbytes(200), 3)
    # ... and well-framed junk: an unknown frame type, then a whole-message frame that is not CBOR.
    # Neither is fatal by itself: both are counted, and the connection, which never
    # sends a HELLO, is left to the engine's 30 s handshake deadline (we hang up first).
    with connect(port) as sock:
        sock.sendall(frame(b"\x07" + rng.randbytes(100)) + frame(b"\x00\xff\xfe" + rng.randbytes(50)))
        wait_until(
            lambda: stats_of(target).get("messages.malformed", 0) > before.get("messages.malformed", 0),
            5,
            "the junk to be counted",
        )
    # (b) a length prefix of 0xFFFFFFFF
    attack("0xFFFFFFFF", b"\xff\xff\xff\xff" + b"x" * 64, 3)
    # (c) slowloris: silent, half a length prefix, a frame that never finishes (all at once)
    stalls = {
        "silent": b"",
        "half a prefix": b"\x00\x00",
        "half a frame": frame(bytes(1000))[:14],
        "a frame, then half a frame": frame(b"\x07junk") + frame(bytes(1000))[:14],
    }
    socks = {name: connect(port) for name in stalls}
    try:
        opened = time.monotonic()
        for name, data in stalls.items():
            if data:
                socks[name].sendall(data)
        for name, sock in socks.items():
            closed_after[name] = time.monotonic() - opened if wait_closed(sock, opened + 4) else None
    finally:
        for sock in socks.values():
            sock.close()
    # (d) flood: 4 MB of valid-length junk frames, as fast as loopback takes them
    with connect(port) as sock:
        opened = time.monotonic()
        junk = frame(b"\x07" + bytes(16000))
        try:
            for _ in range(256):
                sock.sendall(junk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the agent hung up mid-flood
        closed_after["flood"] = time.monotonic() - opened if wait_closed(sock, opened + 5) else None
    shown = {k: v and round(v, 2) for k, v in closed_after.items()}
    print(f"\nhostile connections closed after (s): {shown}")

    for name in ("http", "0xFFFFFFFF", "flood"):
        took = closed_after[name]
        assert took is not None and took < 1.0, (name, closed_after)
    for name in stalls:
        took = closed_after[name]
        assert took is not None and 0.8 <= took < 2.5, (name, closed_after)  # the 1 s handshake timeout

    # The target survived, is still linked to its friend, and changes still flow both ways.
    assert target.alive
    assert remote_keys(graph_of(target)) == {friend.peer_key}
    assert remote_keys(graph_of(friend)) == {target.peer_key}
    ask(friend, {"op": "metadata_set", "json": '{"after":"attack"}'})
    ask(target, {"op": "metadata_set", "json": '{"still":"here"}'})

    def propagated() -> bool:
        theirs = remote_peer(graph_of(target), friend.peer_key)
        ours = remote_peer(graph_of(friend), target.peer_key)
        return (
            theirs is not None
            and theirs["peer_metadata"] == {"after": "attack"}
            and ours is not None
            and ours["peer_metadata"] == {"still": "here"}
        )

    wait_until(propagated, 5, "metadata changes to propagate after the attack")

    after = stats_of(target)
    grew = {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}
    print(f"target's counters that grew: {grew}")
    assert grew.get("transport.lan.frame_oversized", 0) >= 2, grew  # the HTTP request, 0xFFFFFFFF
    assert grew.get("transport.lan.handshake_timeout", 0) >= len(stalls), grew
    assert grew.get("transport.lan.peer_flooding", 0) >= 1, grew
    assert grew.get("frames.malformed", 0) >= 2, grew  # unknown frame types
    assert grew.get("messages.malformed", 0) >= 1, grew  # not CBOR
    assert grew.get("links.established", 0) == 0, grew  # no hostile connection was admitted
    assert target.alive
    mesh.stop(target)
    mesh.stop(friend)


# ---------------------------------------------------------------- the transport's clock and bounds


def test_the_transport_runs_on_the_engines_monotonic_clock() -> None:
    from agent.transports.lan import LanTransport
    from agent.transports.lan_settings import LanSettings

    clock = [1000.0]
    lan = LanTransport(LanSettings(), bytes(32), rng=random.Random(1), clock=lambda: clock[0])
    peer = b"\x01" * 32
    endpoint = (peer, "127.0.0.1", 4000)
    lan._dial_failed(endpoint, "test")  # 0.5 s doubling, up to 50 % longer, from the transport's clock
    held = lan._dial_backoff.retry_at(endpoint)
    assert held is not None and 1000.5 <= held <= 1000.75
    lan.back_off(peer, 1030.0)  # a CloseLink.retry_at 30 s ahead, in the same clock
    held = lan._holds.retry_at(peer)
    assert held is not None and abs(held - 1030.0) < 1.0


def test_beacons_from_ever_new_keys_never_grow_the_dial_back_off_past_its_bound() -> None:
    from agent.transports.lan import MAX_TRACKED_PEERS, LanTransport
    from agent.transports.lan_settings import LanSettings

    lan = LanTransport(LanSettings(), bytes(32), rng=random.Random(1), clock=lambda: 5.0)
    for i in range(MAX_TRACKED_PEERS + 50):
        lan._dial_failed((i.to_bytes(32, "big"), "127.0.0.1", 4000), "no such peer")
    assert len(lan._dial_backoff) == MAX_TRACKED_PEERS
    assert ((0).to_bytes(32, "big"), "127.0.0.1", 4000) not in lan._dial_backoff  # the oldest went first
