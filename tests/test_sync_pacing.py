"""Specification: a sender paces its sync to what the receiver will accept.

Every LAN agent closes a TCP link that sends faster than its
``max_receive_bytes_per_second`` (a token bucket of two seconds of it, each
frame charged its length plus the 4-byte length prefix). A fresh peer joining
a mesh that holds 16 MB of records is pushed all of it at once by every
neighbour (DIGEST answers), so the LAN transport gives the engine a send budget
inside that limit and the engine's outbox paces the push; keepalives still get
through, so no link drops and the joiner converges.

The mesh runs on real engines over :class:`LimitedWire`, which enforces the
receiver's limit exactly as :mod:`agent.transports.lan` does, with the
:class:`~agent.core.linkspec.LinkSpec` the LAN transport really hands the
engine for a TCP link.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core.engine import LinkSpec
from agent.core.events import CloseLink, LinkId
from agent.core.limits import MAX_RECORD_BYTES
from agent.core.pacing import TokenBucket
from agent.core.records import Links, make_card, sign_record
from agent.transports.lan import RECEIVE_BURST_SECONDS, LanTransport
from agent.transports.lan_settings import LanSettings
from tests.test_engine import DAY, NOW, Node, Wire, make_node, raw_key

#: Held by the mesh the fresh peer joins: about 4,000 peers with near-4 KiB cards.
MESH_BYTES = 16_000_000
LENGTH_PREFIX = 4


# ---------------------------------------------------------------- what the LAN transport does


class _RecordingHost:
    def __init__(self) -> None:
        self.specs: list[LinkSpec] = []

    def register_link(self, link: Any, transport: Any) -> None:
        pass

    def link_up(self, link: Any, spec: LinkSpec) -> None:
        self.specs.append(spec)

    def receive(self, link: Any, frame: bytes) -> None:
        pass

    def link_down(self, link: Any) -> None:
        pass

    def count(self, name: str, n: int = 1) -> None:
        pass


def lan_tcp_link_spec(settings: LanSettings) -> LinkSpec:
    """The spec :class:`LanTransport` reports for a TCP link it opens."""

    async def open_one() -> LinkSpec:
        lan = LanTransport(settings, bytes(32))
        host = _RecordingHost()
        lan._host = host
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=ours)
        lan._open(reader, writer, outbound=True, expected_peer=b"\x01" * 32)
        await lan.stop()
        theirs.close()
        return host.specs[0]

    return asyncio.run(open_one())


class LimitedWire(Wire):
    """A :class:`Wire` whose receivers close a link as the LAN transport does.

    Each end of each link charges every frame it reads ``len(frame) + 4`` to a
    :class:`TokenBucket` of ``max_receive_bytes_per_second`` holding
    :data:`RECEIVE_BURST_SECONDS` of it; a frame it cannot pay for drops the
    link at both ends (the reader closes the socket, the far end sees it end).
    """

    def __init__(self, *nodes: Node, settings: LanSettings) -> None:
        super().__init__(*nodes)
        self.rate = float(settings.max_receive_bytes_per_second)
        self.buckets: dict[tuple[int, LinkId], TokenBucket] = {}
        self.flooding_drops: list[tuple[float, str, LinkId]] = []

    def connect(self, a: Node, b: Node, spec: LinkSpec | None = None) -> LinkId:
        link = super().connect(a, b, spec)
        for node in (a, b):
            self.buckets[(id(node), link)] = TokenBucket(
                self.rate, RECEIVE_BURST_SECONDS * self.rate, self.now
            )
        return link

    def pump(self, limit: int = 1_000_000) -> None:
        for node in self.nodes:
            self.service(node)
        for _ in range(limit):
            if not self._queue:
                return
            node, link, frame = self._queue.popleft()
            if frame is None:
                node.engine.link_down(link, self.now)
            elif link in self.muted:
                continue
            elif self.buckets[(id(node), link)].try_take(len(frame) + LENGTH_PREFIX, self.now):
                node.engine.receive(link, frame, self.now)
            else:
                self.flooding_drops.append((self.now, node.name, link))
                self.muted.add(link)  # the socket is closed: nothing more arrives either way
                node.engine.link_down(link, self.now)
                self._queue.append((self.other(node, link), link, None))
            self.service(node)
        raise AssertionError("the engines never went quiet")


# ---------------------------------------------------------------- a mesh holding 16 MB


def near_full_card_records(total_bytes: int) -> list[bytes]:
    """Cards of just under 4 KiB (and an empty links record) of fresh peers, ``total_bytes`` in all."""
    raws: list[bytes] = []
    size = 0
    expiry = int(NOW + DAY)
    while size < total_bytes:
        private_key = Ed25519PrivateKey.generate()
        public_key = raw_key(private_key)
        card = make_card(f"peer-{len(raws)}", "linux", "0.1.0", {"blob": "x" * 3900})
        for raw in (
            sign_record(private_key, public_key, 1, expiry, card).raw,
            sign_record(private_key, public_key, 2, expiry, Links(())).raw,
        ):
            raws.append(raw)
            size += len(raw)
    return raws


@pytest.fixture(scope="module")
def mesh_records() -> list[bytes]:
    raws = near_full_card_records(MESH_BYTES)
    assert max(map(len, raws)) <= MAX_RECORD_BYTES
    return raws


def lan_link_closes(wire: Wire) -> list[CloseLink]:
    return [e for _, _, e in wire.events if isinstance(e, CloseLink)]


def longest_silence(wire: Wire, since: float, until: float) -> float:
    """The longest time any end of any link sent nothing, between ``since`` and ``until``."""
    times: dict[tuple[str, LinkId], list[float]] = {}
    for sent in wire.log:
        if sent.time >= since:
            times.setdefault((sent.sender.name, sent.link), []).append(sent.time)
    return max(max(b - a for a, b in zip([since, *ts], [*ts, until], strict=True)) for ts in times.values())


# ---------------------------------------------------------------- the policy


def test_a_lan_link_sends_within_the_receive_limit_both_sides_use_with_a_margin() -> None:
    settings = LanSettings()
    spec = lan_tcp_link_spec(settings)
    limit = settings.max_receive_bytes_per_second
    assert spec.bytes_per_second is not None and spec.bytes_per_second <= 0.8 * limit
    assert spec.burst_bytes is not None and spec.burst_bytes <= 0.8 * RECEIVE_BURST_SECONDS * limit
    assert spec.frame_overhead_bytes == LENGTH_PREFIX  # the receiver charges the length prefix too


def test_a_fresh_peer_joining_a_mesh_holding_16_mb_drops_no_link_and_converges(
    mesh_records: list[bytes],
) -> None:
    settings = LanSettings()
    spec = lan_tcp_link_spec(settings)
    holders = [make_node(name, held_records=mesh_records) for name in ("a", "b")]
    joiner = make_node("fresh")
    wire = LimitedWire(*holders, joiner, settings=settings)
    wire.connect(holders[0], holders[1], spec)
    wire.run(1.0)
    assert holders[0].engine.summary == holders[1].engine.summary

    for holder in holders:
        wire.connect(joiner, holder, replace(spec))
    joined_at = wire.now
    converged = wire.run_until(
        lambda: all(joiner.engine.summary == h.engine.summary for h in holders) or bool(wire.flooding_drops),
        timeout=120.0,
    )
    pushed = sum(len(r) for r in mesh_records)
    silence = longest_silence(wire, joined_at, wire.now)
    print(
        f"\n{pushed / 1e6:.2f} MB, {len(mesh_records)} records: converged in {wire.now - joined_at:.1f} s,"
        f" longest silence on a link {silence:.2f} s"
    )

    assert wire.flooding_drops == []  # the joiner's receive limit never tripped
    assert lan_link_closes(wire) == []  # nor did a dead interval, on any link
    assert converged
    assert silence <= settings.keepalive_interval + 0.01  # keepalives and paced frames keep links alive
    assert len(joiner.engine.established_links()) == 2
