"""The deterministic world every target and the seed generator share.

Fixed keys (Ed25519 signing is deterministic, so every record below is the
same bytes on every run), one virtual instant :data:`NOW`, and engines built
from seeded RNGs. Because the seed corpus is generated from the same world,
its records verify and its PROOF matches the nonce the fuzzed engine sent:
mutations start from inputs that reach deep into the decoders.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agent.core.engine import Engine, EngineConfig, LinkSpec
from agent.core.events import ConnectionRequested
from agent.core.limits import HANDSHAKE_CONTEXT
from agent.core.records import Card, ConnectionType, LinkEntry, Links, Record, make_card, sign_record
from agent.core.wire import decode_message
from agent.state.store import MemoryCounter

NOW: Final = 1_800_000_000.0
DAY: Final = 24 * 3600
#: The fuzzed link: small enough that cards and digests are fragmented.
MTU: Final = 255
SPEC: Final = LinkSpec(ConnectionType.ACCESS_POINT, mtu=MTU)
#: A LoRa-class link: a send budget, airtime per frame, slow keepalives (pacing and the outbox).
SLOW: Final = LinkSpec(
    ConnectionType.RADIO,
    mtu=MTU,
    bytes_per_second=64.0,
    frame_overhead_bytes=13,
    keepalive_interval=60.0,
    dead_interval=180.0,
)
FAR: Final = "far"
#: Small bounds, so a fuzzed run can reach them (capacity, digest splitting).
CONFIG: Final = EngineConfig(max_peers=8, max_digest_bytes=64)


@dataclass(frozen=True)
class Key:
    private: Ed25519PrivateKey
    public: bytes

    @property
    def peer_id(self) -> bytes:
        return self.public[:8]

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)


@functools.cache
def key(seed: int) -> Key:
    """The key made from 32 bytes of ``seed``: 1 is the fuzzed engine, 2 its remote, 3+ strangers."""
    private = Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)
    return Key(private, private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


LOCAL: Final = 1
REMOTE: Final = 2
STRANGERS: Final = (3, 4, 5, 6)


def card(
    seed: int, counter: int = 1, metadata: dict[str, Any] | None = None, expiry: float = NOW + DAY
) -> Record:
    k = key(seed)
    body = make_card(f"peer-{seed}", "linux", "0.1.0", metadata or {})
    return sign_record(k.private, k.public, counter, int(expiry), body)


def links(seed: int, counter: int, neighbours: Iterable[int], expiry: float = NOW + DAY) -> Record:
    k = key(seed)
    entries = tuple(
        LinkEntry(key(n).peer_id, ConnectionType.ACCESS_POINT, 10 * n if n % 2 else None) for n in neighbours
    )
    return sign_record(k.private, k.public, counter, int(expiry), Links(entries))


def engine(seed: int = LOCAL, *, held: Iterable[bytes] = ()) -> Engine:
    k = key(seed)
    return Engine(
        private_key=k.private,
        public_key=k.public,
        counters=MemoryCounter(),
        card=make_card(f"peer-{seed}", "linux", "0.1.0", {"role": "fuzzed"}),
        now=NOW,
        rng=random.Random(seed).randbytes,
        config=CONFIG,
        held_records=held,
    )


def proof(signer: int, verifier_nonce: bytes, verifier: int) -> bytes:
    """The PROOF signature ``signer`` sends to ``verifier`` after its HELLO."""
    return key(signer).sign(HANDSHAKE_CONTEXT + verifier_nonce + key(signer).public + key(verifier).public)


# ---------------------------------------------------------------- the two engine states fuzzed


@dataclass
class Scene:
    """An engine with one link ``FAR`` (see :func:`fresh` and :func:`established`) and the clock."""

    engine: Engine
    now: float
    #: The nonce of the engine's HELLO on ``FAR`` (what the remote's PROOF must sign).
    nonce: bytes


def drain(eng: Engine, now: float, allow: bool = True) -> list[bytes]:
    """Everything ``eng`` wants to send now; connection requests are answered ``allow``."""
    sent: list[bytes] = []
    for _ in range(100):
        progressed = False
        while (event := eng.next_event()) is not None:
            progressed = True
            if isinstance(event, ConnectionRequested):
                eng.decide(event.link, allow, now)
        for _, frame in eng.datagrams_to_send(now):
            progressed = True
            sent.append(frame)
        if not progressed:
            break
    return sent


@functools.cache
def plain_card(seed: int) -> bytes:
    """``seed``'s card, counter 1, no metadata (cached: signing costs more than a fuzz input)."""
    return card(seed).raw


def fresh(spec: LinkSpec = SPEC) -> Scene:
    """The engine right after its link came up: its HELLO sent, nothing received yet.

    Built anew for every input (0.4 ms): a run depends on its input only.
    """
    eng = engine(LOCAL, held=[plain_card(STRANGERS[0])])
    eng.link_up(FAR, spec, NOW)
    (hello,) = drain(eng, NOW)
    _, fields = decode_message(hello[1:])
    return Scene(eng, NOW, fields[1])


def established() -> Scene:
    """The engine with an admitted link to REMOTE, cards and links records exchanged.

    A real handshake between LOCAL and REMOTE engines over a zero-latency wire,
    run anew for every input (1.2 ms).
    """
    a, b = engine(LOCAL), engine(REMOTE)
    a.link_up(FAR, SPEC, NOW)
    b.link_up(FAR, SPEC, NOW)
    nonce = b""
    now = NOW
    for _ in range(50):
        to_b, to_a = drain(a, now), drain(b, now)
        for frame in to_b:
            if not nonce:
                nonce = decode_message(frame[1:])[1][1]
            b.receive(FAR, frame, now)
        for frame in to_a:
            a.receive(FAR, frame, now)
        if not to_a and not to_b:
            if a.established_links() and now > NOW + 0.2:
                break
            now += 0.05
            a.handle_timer(now)
            b.handle_timer(now)
    assert a.established_links(), "the fuzz world's handshake did not complete"
    return Scene(a, now, nonce)


def card_of(record: Record) -> Card:
    assert isinstance(record.body, Card)
    return record.body
