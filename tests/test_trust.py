"""Specification of fleet trust in the engine ("trust on", agent.core.trust).

With a CA configured, an engine's card carries its certificate, and:

* a peer without a valid, unrevoked certificate from a trusted CA is refused at
  the handshake, and both sides say why (the refuser's close names the reason,
  its DENY carries it, the refused side closes with it);
* a certified peer joins, and what its certificate says is its
  ``identity_service_metadata``, in every graph and in the connection request;
* records of uncertified keys are neither held nor flooded, refused before any
  signature is checked, and leave nothing behind;
* a revocation list is flooded like a record (the newest per CA wins); a
  revoked peer's links close and it leaves every graph within the departure
  grace; a certificate that expires while held does the same at the sweep;
* two CAs are trusted at once during a rotation.

Engines run on the zero-latency virtual wire of ``tests/test_engine.py``.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core.certs import (
    CertificateError,
    FleetTrust,
    RevocationList,
    TrustReason,
    issue_certificate,
    raw_public_key,
    sign_revocation_list,
)
from agent.core.codec import PlainCodec
from agent.core.engine import Engine, EngineConfig, LinkSpec, Membership
from agent.core.events import CloseLink, ConnectionRequested, LinkId
from agent.core.reasons import CloseReason
from agent.core.records import Card, Envelope, Links, Record, make_card, sign_record
from agent.core.trust import HINTS
from agent.core.wire import Deny, MessageType, parse_fields
from agent.state.store import MemoryCounter
from tests.test_engine import DAY, LAN, NOW, Node, Wire, decode_frames, deliver, plain, records_message

SITE = {"site": "depot-3", "role": "gateway"}


class Ca:
    """A fleet CA for the tests: issues certificates and signs revocation lists."""

    def __init__(self) -> None:
        self.private_key = Ed25519PrivateKey.generate()
        self.key = raw_public_key(self.private_key)
        self._serials = itertools.count(1)
        self._counters = itertools.count(1)

    def issue(
        self,
        device_key: bytes,
        metadata: dict[str, Any] | None = None,
        *,
        issued_at: float = NOW - 60,
        expiry: float = NOW + DAY,
    ) -> bytes:
        cert = issue_certificate(
            self.private_key,
            next(self._serials),
            device_key,
            metadata if metadata is not None else SITE,
            int(issued_at),
            int(expiry),
        )
        return cert.raw

    def revoke(self, serials: Iterable[int], counter: int | None = None) -> RevocationList:
        return sign_revocation_list(self.private_key, counter or next(self._counters), int(NOW), serials)


_seeds = itertools.count(1000)


class CountingCodec(PlainCodec):
    """The production codec, counting the signatures it checks."""

    def __init__(self) -> None:
        self.verified = 0

    def verify(self, envelope: Envelope, raw: bytes) -> Record:
        self.verified += 1
        return super().verify(envelope, raw)


@dataclass(eq=False)
class Member(Node):
    codec: CountingCodec


Certify = Callable[[bytes], bytes]


def member(
    name: str,
    trusted: Iterable[Ca] | None,
    certify: Certify | None = None,
    config: EngineConfig | None = None,
) -> Member:
    """An engine trusting ``trusted`` (``None``: trust off) with the certificate ``certify(its key)``."""
    # These tests forge and read link frames by hand, so their links are plain unless a test
    # gives a config (sealed links: tests/test_session.py, tests/test_sealed_links.py).
    config = config or plain(None)
    private_key = Ed25519PrivateKey.generate()
    key = raw_public_key(private_key)
    membership = None
    if trusted is not None:
        certificate = certify(key) if certify is not None else b""
        membership = Membership(FleetTrust.of([ca.key for ca in trusted]), certificate)
    codec = CountingCodec()
    engine = Engine(
        private_key=private_key,
        public_key=key,
        counters=MemoryCounter(),
        card=make_card(name, "linux", "0.1.0", {}),
        now=NOW,
        rng=random.Random(next(_seeds)).randbytes,
        config=config,
        codec=codec,
        membership=membership,
    )
    return Member(name, engine, private_key, codec)


def certified(ca: Ca, metadata: dict[str, Any] | None = None, **window: float) -> Certify:
    return lambda key: ca.issue(key, metadata, **window)


def forged(ca: Ca) -> Certify:
    def sign(key: bytes) -> bytes:
        cert = bytearray(ca.issue(key))
        cert[-1] ^= 1  # the CA's signature no longer verifies
        return bytes(cert)

    return sign


def shown(wire: Wire, node: Node) -> set[str]:
    return {p.peer_key_string for p in node.engine.graph(wire.now).remote_peers}


def closes(wire: Wire, node: Node) -> list[CloseLink]:
    return wire.events_of(node, CloseLink)


def deny_reasons(wire: Wire, node: Node) -> list[TrustReason | None]:
    """The reasons of every DENY ``node`` sent."""
    return [
        message.reason
        for kind, fields in decode_frames(wire.sent_by(node))
        if kind is MessageType.DENY and isinstance(message := parse_fields(kind, fields), Deny)
    ]


def link_between(wire: Wire, x: Node, y: Node) -> LinkId:
    return next(link for link, ends in wire.ends.items() if set(ends) == {x, y})


# ---------------------------------------------------------------- joining


def test_a_certified_peer_joins_and_its_certificate_is_its_identity_metadata_in_graph_and_request() -> None:
    ca = Ca()
    a = member("a", [ca], certified(ca, {"site": "depot-3", "role": "gateway"}))
    b = member("b", [ca], certified(ca, {"site": "depot-3", "role": "sensor", "serial": "S-17"}))
    wire = Wire(a, b)
    wire.connect(a, b)
    wire.run(0.5)

    assert a.engine.established_links() and b.engine.established_links()
    [request_at_a] = wire.events_of(a, ConnectionRequested)
    assert dict(request_at_a.request.identity_service_metadata) == {
        "site": "depot-3",
        "role": "sensor",
        "serial": "S-17",
    }
    graph = a.engine.graph(wire.now)
    [peer_b] = graph.remote_peers
    assert dict(peer_b.identity_service_metadata)["serial"] == "S-17"
    assert dict(peer_b.peer_metadata) == {}  # the card's own metadata stays the card's
    assert dict(graph.local_peer.identity_service_metadata) == {"site": "depot-3", "role": "gateway"}
    assert a.engine.trust_on


def test_a_peer_known_through_the_mesh_shows_its_identity_metadata_too() -> None:
    ca = Ca()
    a, b, c = (member(n, [ca], certified(ca, {"name": n})) for n in "abc")
    wire = Wire(a, b, c)
    wire.connect(a, b)
    wire.connect(b, c)
    wire.run(1.0)

    far = {p.peer_key_string: p for p in a.engine.graph(wire.now).remote_peers}[c.engine.peer_key_string]
    assert far.hops == 2
    assert dict(far.identity_service_metadata) == {"name": "c"}


def test_with_trust_off_identity_metadata_is_empty_and_cards_carry_no_certificate() -> None:
    a, b = member("a", None), member("b", None)
    wire = Wire(a, b)
    wire.connect(a, b)
    wire.run(0.5)

    [request] = wire.events_of(a, ConnectionRequested)
    assert dict(request.request.identity_service_metadata) == {}
    assert all(dict(p.identity_service_metadata) == {} for p in a.engine.graph(wire.now).peers())
    card = a.engine.own_records[0].body
    assert isinstance(card, Card) and card.certificate == b""
    assert not a.engine.trust_on


# ---------------------------------------------------------------- refused at the handshake


def _refusal(certified: Member, other: Member) -> tuple[Wire, Member, Member]:
    wire = Wire(certified, other)
    wire.connect(certified, other)
    wire.run(2.0)
    assert not certified.engine.established_links() and not other.engine.established_links()
    return wire, certified, other


def test_an_uncertified_peer_is_refused_and_both_sides_say_it_has_no_certificate() -> None:
    ca = Ca()
    wire, fleet, stranger = _refusal(member("fleet", [ca], certified(ca)), member("stranger", None))

    [refused] = closes(wire, fleet)
    assert refused.cause is CloseReason.UNTRUSTED and "no_certificate" in refused.reason
    assert deny_reasons(wire, fleet) == [TrustReason.NO_CERTIFICATE]
    [told] = closes(wire, stranger)
    assert told.cause is CloseReason.REFUSED_BY_REMOTE and "no_certificate" in told.reason
    assert fleet.engine.stats["handshake.rejected.uncertified"] == 1
    assert fleet.engine.stats["trust.rejected.no_certificate"] == 1
    assert stranger.engine.stats["trust.refused_by_remote.no_certificate"] == 1
    assert shown(wire, fleet) == set() and shown(wire, stranger) == set()


def test_an_uncertified_peer_is_refused_whichever_side_opens_the_link() -> None:
    ca = Ca()
    for first_up in ("fleet", "stranger"):
        fleet, stranger = member("fleet", [ca], certified(ca)), member("stranger", None)
        wire = Wire(fleet, stranger)
        link = 99
        wire.ends[link] = (fleet, stranger)
        order = [(fleet, stranger), (stranger, fleet)]
        if first_up == "stranger":
            order.reverse()
        for node, other in order:
            node.engine.link_up(link, LinkSpec(LAN, expected_peer=other.key), wire.now)
            wire.pump()
        wire.run(2.0)
        assert [c.cause for c in closes(wire, fleet)] == [CloseReason.UNTRUSTED]
        assert [c.cause for c in closes(wire, stranger)] == [CloseReason.REFUSED_BY_REMOTE]


@pytest.mark.parametrize(
    ("why", "reason"),
    [
        ("expired", TrustReason.EXPIRED),
        ("not yet valid", TrustReason.NOT_YET_VALID),
        ("unknown CA", TrustReason.UNKNOWN_CA),
        ("another device's certificate", TrustReason.WRONG_KEY),
        ("revoked", TrustReason.REVOKED),
        ("forged", TrustReason.BAD_SIGNATURE),
    ],
)
def test_a_peer_whose_certificate_is_refused_is_told_why_and_logs_it(
    why: str, reason: TrustReason, caplog: pytest.LogCaptureFixture
) -> None:
    ca, other_ca = Ca(), Ca()
    bad_certificate = {
        "expired": certified(ca, issued_at=NOW - 2 * DAY, expiry=NOW - DAY),
        "not yet valid": certified(ca, issued_at=NOW + DAY, expiry=NOW + 2 * DAY),
        "unknown CA": certified(other_ca),
        "another device's certificate": lambda _key: ca.issue(member("x", None).key),
        "revoked": certified(ca),  # serial 1
        "forged": forged(ca),
    }[why]
    bad = member("bad", [ca], bad_certificate)
    fleet = member("fleet", [ca], certified(ca))
    if why == "revoked":
        fleet.engine.add_revocation_list(ca.revoke([1]).raw, NOW)
    caplog.set_level("WARNING", logger="agent.core.engine")

    wire, fleet, bad = _refusal(fleet, bad)

    refused = [c for c in closes(wire, fleet) if c.cause is CloseReason.UNTRUSTED]
    assert refused and reason.value in refused[0].reason
    assert reason in deny_reasons(wire, fleet)
    assert fleet.engine.stats[f"trust.rejected.{reason}"] >= 1
    assert CloseReason.REFUSED_BY_REMOTE in [c.cause for c in closes(wire, bad)]
    told = [r.getMessage() for r in caplog.records if "refused this device's certificate" in r.getMessage()]
    assert told == [
        f"peer {fleet.engine.peer_key_string} refused this device's certificate ({reason}): {HINTS[reason]}"
    ]


def test_refusals_are_logged_once_a_minute_however_often_they_come(caplog: pytest.LogCaptureFixture) -> None:
    ca = Ca()
    fleet = member("fleet", [ca], certified(ca))
    caplog.set_level("WARNING", logger="agent.core.engine")
    wire = Wire(fleet)
    for _ in range(5):
        stranger = member("stranger", None)
        wire.connect(fleet, stranger)
        wire.run(0.2)
    assert fleet.engine.stats["trust.rejected.no_certificate"] == 5
    lines = [r for r in caplog.records if "refused peer" in r.getMessage()]
    assert len(lines) == 1 and "no_certificate" in lines[0].getMessage()


# ---------------------------------------------------------------- records of uncertified keys


def _stranger_records(count: int, certificate: Certify | None = None) -> list[bytes]:
    raws = []
    for i in range(count):
        private_key = Ed25519PrivateKey.generate()
        key = raw_public_key(private_key)
        cert = certificate(key) if certificate is not None else b""
        card = Card(f"sybil-{i}", "linux", "0.1.0", {}, cert)
        raws.append(sign_record(private_key, key, 1, int(NOW + DAY), card).raw)
        raws.append(sign_record(private_key, key, 2, int(NOW + DAY), Links(())).raw)
    return raws


def test_a_flood_of_uncertified_records_through_an_admitted_link_costs_no_signature_and_leaves_nothing() -> (
    None
):
    ca = Ca()
    a, b = member("a", [ca], certified(ca)), member("b", [ca], certified(ca))
    wire = Wire(a, b)
    link = wire.connect(a, b)
    wire.run(0.5)
    before = (a.engine.table_usage(), b.engine.table_usage())
    verified = a.codec.verified

    flood = _stranger_records(300)
    for i in range(0, len(flood), 20):
        deliver(a, link, records_message(*flood[i : i + 20]), wire.now, msg_id=i % 256)
    wire.run(0.5)

    assert a.codec.verified == verified  # refused before any signature was checked
    assert (a.engine.table_usage(), b.engine.table_usage()) == before  # held nowhere, flooded nowhere
    assert a.engine.stats["records.rejected.uncertified"] == 600
    assert a.engine.stats["trust.rejected.no_certificate"] == 600
    assert shown(wire, a) == {b.engine.peer_key_string}
    # The link is still good: a new certified peer joins through it.
    c = member("c", [ca], certified(ca))
    wire.connect(b, c)
    wire.run(1.0)
    assert c.engine.peer_key_string in shown(wire, a)


def test_records_with_certificates_of_an_unknown_ca_or_forged_are_neither_held_nor_flooded() -> None:
    ca, rogue = Ca(), Ca()
    a, b, c = (member(n, [ca], certified(ca)) for n in "abc")
    wire = Wire(a, b, c)
    link = wire.connect(a, b)
    wire.connect(b, c)
    wire.run(1.0)
    before = (b.engine.table_usage(), c.engine.table_usage())

    rogue_records = _stranger_records(5, certified(rogue))
    forged_records = _stranger_records(5, forged(ca))
    deliver(b, link, records_message(*rogue_records), wire.now, msg_id=1)
    deliver(b, link, records_message(*forged_records), wire.now, msg_id=2)
    wire.run(0.5)

    assert (b.engine.table_usage(), c.engine.table_usage()) == before
    assert b.engine.stats["trust.rejected.unknown_ca"] == 5
    assert b.engine.stats["trust.rejected.bad_signature"] == 5
    assert b.engine.stats["trust.rejected.no_certificate"] == 10  # their links records: no certified card
    assert c.engine.stats["records.rejected.uncertified"] == 0  # nothing reached c


def test_a_links_record_that_arrives_before_its_card_is_held_once_the_card_comes() -> None:
    ca = Ca()
    a, b = member("a", [ca], certified(ca)), member("b", [ca], certified(ca))
    wire = Wire(a, b)
    link = wire.connect(a, b)
    wire.run(0.5)
    [card, links] = _stranger_records(1, certified(ca))

    deliver(a, link, records_message(links), wire.now, msg_id=1)
    wire.pump()
    assert a.engine.held_record_count() == 4  # a's and b's records only
    deliver(a, link, records_message(card), wire.now, msg_id=2)
    wire.pump()

    assert a.engine.held_record_count() == 6


# ---------------------------------------------------------------- revocation


def _chain(ca: Ca, *names: str) -> tuple[Wire, list[Member]]:
    nodes = [member(n, [ca], certified(ca, {"name": n})) for n in names]
    wire = Wire(*nodes)
    for left, right in itertools.pairwise(nodes):
        wire.connect(left, right)
    wire.run(1.0)
    everyone = {n.engine.peer_key_string for n in nodes}
    for node in nodes:
        assert shown(wire, node) == everyone - {node.engine.peer_key_string}
    return wire, nodes


def test_a_revoked_peer_leaves_every_graph_within_the_departure_grace_and_its_links_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ca = Ca()
    wire, [a, b, c, d] = _chain(ca, "a", "b", "c", "d")  # serials 1..4
    caplog.set_level("WARNING", logger="agent.core.engine")

    a.engine.add_revocation_list(ca.revoke([3]).raw, wire.now)  # c
    start = wire.now
    grace = EngineConfig().departure_grace
    gone = wire.run_until(
        lambda: all(c.engine.peer_key_string not in shown(wire, n) for n in (a, b, d)), timeout=grace + 0.1
    )

    assert gone and wire.now - start <= grace + 0.1
    for node in (a, b, d):
        assert node.engine.stats["trust.revocation_lists.accepted"] == 1
        assert node.engine.records_of(c.key) == []
    withdrawn = [e for e in closes(wire, b) + closes(wire, d) if e.cause is CloseReason.WITHDRAWN]
    assert len(withdrawn) == 2 and all("revoked" in e.reason for e in withdrawn)
    assert {e.cause for e in closes(wire, c)} == {CloseReason.REFUSED_BY_REMOTE}
    assert not c.engine.established_links()
    wire.run(grace + 0.1)
    assert d.engine.peer_key_string not in shown(wire, a)  # c was the only way to d
    assert any("refused this device's certificate (revoked)" in r.getMessage() for r in caplog.records)


def test_a_revoked_peer_is_refused_when_it_comes_back_and_a_newcomer_learns_the_list() -> None:
    ca = Ca()
    wire, [a, b] = _chain(ca, "a", "b")  # serials 1, 2
    revoked = member("revoked", [ca], certified(ca))  # serial 3
    a.engine.add_revocation_list(ca.revoke([3]).raw, wire.now)
    wire.run(0.2)

    newcomer = member("newcomer", [ca], certified(ca))
    wire.connect(b, newcomer)
    wire.run(0.5)
    assert newcomer.engine.stats["trust.revocation_lists.accepted"] == 1
    wire.connect(newcomer, revoked)
    wire.run(0.5)

    assert [e.cause for e in closes(wire, newcomer)] == [CloseReason.UNTRUSTED]
    assert newcomer.engine.stats["trust.rejected.revoked"] == 1
    assert revoked.engine.peer_key_string not in shown(wire, a)


def test_the_newest_revocation_list_wins_and_an_older_one_changes_nothing() -> None:
    ca = Ca()
    wire, [a, b, c] = _chain(ca, "a", "b", "c")  # serials 1..3
    first, second = ca.revoke([], counter=1), ca.revoke([3], counter=2)

    a.engine.add_revocation_list(second.raw, wire.now)
    wire.run(0.5)
    with pytest.raises(CertificateError) as caught:
        a.engine.add_revocation_list(first.raw, wire.now)
    assert caught.value.reason is TrustReason.STALE
    link = link_between(wire, a, b)
    deliver(b, link, records_message(first.raw), wire.now, msg_id=7)
    deliver(b, link, records_message(second.raw), wire.now, msg_id=8)
    wire.run(0.5)

    assert b.engine.stats["trust.revocation_lists.rejected.stale"] == 1
    assert b.engine.stats["trust.revocation_lists.duplicate"] == 1  # a copy ends the flood there
    assert c.engine.peer_key_string not in shown(wire, a) | shown(wire, b)


def test_a_revocation_list_not_signed_by_a_trusted_ca_is_refused() -> None:
    ca, rogue = Ca(), Ca()
    wire, [a, b] = _chain(ca, "a", "b")
    deliver(a, link_between(wire, a, b), records_message(rogue.revoke([1, 2]).raw), wire.now, msg_id=3)
    wire.run(0.5)
    assert a.engine.stats["trust.revocation_lists.rejected.unknown_ca"] == 1
    assert b.engine.peer_key_string in shown(wire, a)


def test_with_trust_off_a_revocation_list_is_only_a_malformed_record() -> None:
    ca = Ca()
    a, b = member("a", None), member("b", None)
    wire = Wire(a, b)
    link = wire.connect(a, b)
    wire.run(0.5)
    deliver(a, link, records_message(ca.revoke([1]).raw), wire.now, msg_id=3)
    assert a.engine.stats["records.rejected.malformed"] == 1
    with pytest.raises(ValueError, match="trust is off"):
        a.engine.add_revocation_list(ca.revoke([1]).raw, wire.now)


def test_a_certificate_that_expires_while_held_is_withdrawn_at_the_sweep() -> None:
    ca = Ca()
    a = member("a", [ca], certified(ca))
    b = member("b", [ca], certified(ca, expiry=NOW + 90))
    wire = Wire(a, b)
    wire.connect(a, b)
    wire.run(1.0)
    assert b.engine.peer_key_string in shown(wire, a)

    sweep = EngineConfig().sweep_interval
    wire.run(2 * sweep)

    assert b.engine.peer_key_string not in shown(wire, a)
    assert a.engine.stats["trust.peers_withdrawn"] == 1
    assert [e.cause for e in closes(wire, a)] == [CloseReason.WITHDRAWN]


# ---------------------------------------------------------------- rotation


def test_during_a_ca_rotation_peers_certified_by_the_old_and_the_new_ca_form_one_mesh() -> None:
    old, new = Ca(), Ca()
    a = member("a", [old, new], certified(old, {"ca": "old"}))
    b = member("b", [old, new], certified(new, {"ca": "new"}))
    c = member("c", [new], certified(new, {"ca": "new"}))  # already trusts only the new CA
    wire = Wire(a, b, c)
    wire.connect(a, b)
    wire.connect(b, c)
    wire.run(1.0)

    assert {dict(p.identity_service_metadata)["ca"] for p in a.engine.graph(wire.now).remote_peers} == {"new"}
    assert shown(wire, b) == {a.engine.peer_key_string, c.engine.peer_key_string}
    # c does not trust the old CA: a's records are refused there, and a link to a would be too.
    assert a.engine.peer_key_string not in shown(wire, c)
    assert c.engine.stats["trust.rejected.unknown_ca"] >= 1
    wire.connect(c, a)
    wire.run(1.0)
    assert CloseReason.UNTRUSTED in [e.cause for e in closes(wire, c)]
    assert a.engine.peer_key_string not in shown(wire, c)


def test_an_engine_whose_own_certificate_would_be_refused_says_so_at_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ca = Ca()
    caplog.set_level("WARNING", logger="agent.core.engine")
    member("late", [ca], certified(ca, issued_at=NOW - 2 * DAY, expiry=NOW - DAY))
    [line] = [r.getMessage() for r in caplog.records]
    assert "this device's certificate will be refused by the fleet (expired" in line
