"""The leaf profile's test vectors (docs/LEAF_PROFILE.md), made with the host's public functions only.

::

    python tests/leaf_vectors.py --write   # (re)writes docs/leaf-profile-vectors.json
    python tests/leaf_vectors.py           # exit 1 if the committed file differs from what the host makes

Everything is fixed: two seeds (a leaf and a router; a second router only appears as a peer id),
the nonces, counters and expiries below. Ed25519 signatures are deterministic (RFC 8032), so the
same inputs always give the same bytes. Each vector is a JSON object with a ``description``, its
bytes as lower-case ``hex`` (or, for frames, a list of hex strings under ``frames``), and where
useful the ``inputs`` it was made from. ``tests/test_leaf_profile.py`` regenerates the vectors,
compares them with the committed file, and decodes every one with the host's decoders.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: import the agent of this checkout
    sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from vectors_support import vectors_main  # noqa: E402

from agent.core import cose  # noqa: E402
from agent.core.limits import HANDSHAKE_CONTEXT, PROTOCOL_VERSION  # noqa: E402
from agent.core.own_records import links_record  # noqa: E402
from agent.core.records import (  # noqa: E402
    Card,
    ConnectionType,
    LinkEntry,
    Links,
    Record,
    RecordKind,
    card_payload,
    links_payload,
    make_card,
    sign_record,
    thaw_metadata,
)
from agent.core.wire import (  # noqa: E402
    Accept,
    Capabilities,
    CardRequest,
    Deny,
    Digest,
    Proof,
    Records,
    Role,
    Summary,
    digest_entry,
    encode_hello,
    frames_for,
)

VECTORS_PATH = ROOT / "docs" / "leaf-profile-vectors.json"

LEAF_SEED = hashlib.sha256(b"presence-agent leaf profile: leaf").digest()
ROUTER_SEED = hashlib.sha256(b"presence-agent leaf profile: router").digest()
#: A second router: only its peer id is used (in the leaf's links record).
ROUTER2_SEED = hashlib.sha256(b"presence-agent leaf profile: router 2").digest()
LEAF_NONCE = bytes.fromhex("00112233445566778899aabbccddeeff")
ROUTER_NONCE = bytes.fromhex("f0e1d2c3b4a5968778695a4b3c2d1e0f")
#: 2027-01-15T08:00:00Z: every record's expiry but the widest one.
EXPIRY = 1_800_000_000
MAX_U32 = 2**32 - 1

#: Nested Unicode metadata: text keys whose byte order differs from their character order, non-ASCII
#: text, every JSON type but floats (a leaf has none), integers at the 64-bit edges.
METADATA: dict[str, Any] = {
    "room": "Küche",
    "sensor": {"kind": "温度", "unit": "°C", "range": [-40, 125], "ok": True},
    "tags": ["ble", "leaf", "🌡"],
    "zz": None,
    "é": False,
    "b": 24,
    "": {},
    "big": 2**64 - 1,
    "neg": -(2**63),
}


def _key(seed: bytes) -> tuple[Ed25519PrivateKey, bytes]:
    private = Ed25519PrivateKey.from_private_bytes(seed)
    return private, private.public_key().public_bytes_raw()


LEAF_KEY, LEAF_PUBLIC = _key(LEAF_SEED)
ROUTER_KEY, ROUTER_PUBLIC = _key(ROUTER_SEED)
_, ROUTER2_PUBLIC = _key(ROUTER2_SEED)
LEAF_ID, ROUTER_ID, ROUTER2_ID = LEAF_PUBLIC[:8], ROUTER_PUBLIC[:8], ROUTER2_PUBLIC[:8]


def _jsonable(value: Any) -> Any:
    """Inputs as JSON: bytes as hex strings, enums by value, tuples as lists."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, ConnectionType | Role):
        return value.value
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _vector(description: str, data: bytes, **inputs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "hex": data.hex()}
    if inputs:
        out["inputs"] = _jsonable(inputs)
    return out


class _Builder:
    def __init__(self) -> None:
        self.vectors: dict[str, dict[str, Any]] = {}

    def add(self, name: str, description: str, data: bytes, **inputs: Any) -> None:
        assert name not in self.vectors, name
        self.vectors[name] = _vector(description, data, **inputs)

    def frames(self, name: str, description: str, message: str, mtu: int, msg_id: int) -> None:
        data = bytes.fromhex(self.vectors[message]["hex"])
        frames = frames_for(data, mtu, msg_id)
        self.vectors[name] = {
            "description": description,
            "frames": [f.hex() for f in frames],
            "inputs": {"message": message, "mtu": mtu, "msg_id": msg_id},
        }

    def record(
        self,
        name: str,
        what: str,
        private: Ed25519PrivateKey,
        public: bytes,
        counter: int,
        expiry: int,
        body: Any,
    ) -> Record:
        """A signed record's four vectors: payload, Sig_structure, signature, COSE_Sign1."""
        record = sign_record(private, public, counter, expiry, body)
        if isinstance(body, Card):
            payload = card_payload(public, counter, expiry, body)
            inputs: dict[str, Any] = {
                "public_key": public,
                "counter": counter,
                "expiry": expiry,
                "device_name": body.device_name,
                "os": body.os,
                "agent_version": body.agent_version,
                "metadata": thaw_metadata(body.metadata),
            }
        else:
            payload = links_payload(public, counter, expiry, body)
            inputs = {
                "public_key": public,
                "counter": counter,
                "expiry": expiry,
                "links": [[e.peer_id, e.connection_type, e.distance_dm] for e in body.entries],
            }
        self.add(f"{name}.payload", f"{what}: the payload (deterministic CBOR)", payload, **inputs)
        self.add(
            f"{name}.sig_structure",
            f"{what}: the bytes Ed25519 signs, [\"Signature1\", h'A10127', h'', payload]",
            cose.sig_structure(payload),
        )
        self.add(f"{name}.signature", f"{what}: the Ed25519 signature", record.raw[-64:])
        self.add(f"{name}.cose", f"{what}: the signed record, COSE_Sign1 (tag 18)", record.raw)
        return record


def build() -> dict[str, Any]:
    """Every vector, in the order docs/LEAF_PROFILE.md cites them."""
    b = _Builder()

    # ------------------------------------------------------------ keys and constants
    b.add("key.leaf.seed", "the leaf's Ed25519 seed (RFC 8032 private key)", LEAF_SEED)
    b.add("key.leaf.public", "the leaf's public key", LEAF_PUBLIC)
    b.add("key.leaf.peer_id", "the leaf's peer id: the first 8 bytes of its public key", LEAF_ID)
    b.add("key.router.seed", "the router's Ed25519 seed", ROUTER_SEED)
    b.add("key.router.public", "the router's public key", ROUTER_PUBLIC)
    b.add("key.router.peer_id", "the router's peer id", ROUTER_ID)
    b.add("key.router2.peer_id", "a second router's peer id (in the leaf's links record only)", ROUTER2_ID)
    b.add(
        "cose.prefix",
        "the first 7 bytes of every signed record: tag 18, array(4), {1: -8}, {}",
        cose.envelope(b"", b"")[:7],
    )
    b.add(
        "cose.sig_structure_prefix",
        "the Sig_structure before the payload's bstr head",
        cose.sig_structure(b"")[:-1],
    )
    b.add("proof.context", "HANDSHAKE_CONTEXT, the link proof's domain separation", HANDSHAKE_CONTEXT)
    b.add("nonce.leaf", "the leaf's HELLO nonce in these vectors", LEAF_NONCE)
    b.add("nonce.router", "the router's HELLO nonce in these vectors", ROUTER_NONCE)

    # ------------------------------------------------------------ records
    card = b.record(
        "card.plain",
        "the leaf's card, no metadata (counter 1)",
        LEAF_KEY,
        LEAF_PUBLIC,
        1,
        EXPIRY,
        make_card("leaf-kitchen", "MicroPython 1.27.0 esp32", "0.1.0", {}),
    )
    b.record(
        "card.metadata",
        "the leaf's card with nested Unicode metadata (counter 24)",
        LEAF_KEY,
        LEAF_PUBLIC,
        24,
        EXPIRY,
        make_card("Küche 🌡 sensor", "MicroPython 1.27.0 rp2", "0.1.0", METADATA),
    )
    b.record(
        "card.cut",
        "the leaf's card with over-long strings cut to 64/32/16 bytes, never inside a character "
        "(counter and expiry 2^32-1)",
        LEAF_KEY,
        LEAF_PUBLIC,
        MAX_U32,
        MAX_U32,
        make_card("x" + "ü" * 40, "o" * 40, "0.1.0+" + "€" * 5, {}),
    )
    b.record(
        "links.0",
        "the leaf's links record, no connections (counter 2)",
        LEAF_KEY,
        LEAF_PUBLIC,
        2,
        EXPIRY,
        Links(()),
    )
    links1 = b.record(
        "links.1",
        "the leaf's links record: one router over Bluetooth, no distance (counter 3)",
        LEAF_KEY,
        LEAF_PUBLIC,
        3,
        EXPIRY,
        Links((LinkEntry(ROUTER_ID, ConnectionType.BLUETOOTH),)),
    )
    three, _ = links_record(
        [
            LinkEntry(ROUTER_ID, ConnectionType.BLUETOOTH, 0),
            LinkEntry(ROUTER2_ID, ConnectionType.RADIO, 70000),
            LinkEntry(ROUTER_ID, ConnectionType.ACCESS_POINT, None),
        ]
    )
    b.record(
        "links.3",
        "the leaf's links record: three connections sorted by (peer id, type name); distances "
        "none, 0 dm, and 70000 dm clamped to 65535 (counter 65536)",
        LEAF_KEY,
        LEAF_PUBLIC,
        65536,
        EXPIRY,
        three,
    )
    router_card = b.record(
        "router_card",
        "the router's card (counter 7), which a leaf must verify in the router's HELLO",
        ROUTER_KEY,
        ROUTER_PUBLIC,
        7,
        EXPIRY,
        make_card("pi-gateway", "Linux", "0.1.0", {}),
    )

    # ------------------------------------------------------------ digest entries and summaries
    card_entry = digest_entry(LEAF_ID, RecordKind.CARD, card.counter)
    links_entry = digest_entry(LEAF_ID, RecordKind.LINKS, links1.counter)
    b.add(
        "entry.card.plain",
        "digest entry of card.plain: peer_id(8) kind(1) counter(4, big-endian)",
        card_entry,
    )
    b.add("entry.links.1", "digest entry of links.1", links_entry)
    b.add("entry.router_card", "digest entry of router_card", digest_entry(ROUTER_ID, RecordKind.CARD, 7))
    b.add(
        "summary_hash.card.plain",
        "SHA-256 of entry.card.plain (its first 8 bytes count)",
        hashlib.sha256(card_entry).digest(),
    )
    b.add("summary_hash.links.1", "SHA-256 of entry.links.1", hashlib.sha256(links_entry).digest())
    b.add("summary.none", "the summary of no records", bytes(8))
    b.add(
        "summary.card",
        "the summary of {card.plain}: what a router holding only the leaf's HELLO card sends",
        card.summary_hash.to_bytes(8, "big"),
    )
    both = card.summary_hash ^ links1.summary_hash
    b.add(
        "summary.card+links",
        "the summary of {card.plain, links.1}: the leaf's own summary",
        both.to_bytes(8, "big"),
    )

    # ------------------------------------------------------------ messages
    b.add(
        "msg.hello.leaf.value.512",
        "the leaf's HELLO, card.plain by value, role 1 (leaf), max_message 512",
        encode_hello(LEAF_NONCE, card.raw, Capabilities(Role.LEAF, 512)),
    )
    b.add(
        "msg.hello.leaf.reference.65536",
        "the leaf's HELLO, card.plain by reference (entry.card.plain), role 1, max_message 65536",
        encode_hello(LEAF_NONCE, card_entry, Capabilities(Role.LEAF, 65536)),
    )
    b.add(
        "msg.hello.router.value",
        "the router's HELLO, router_card by value, role 0, max_message 65536",
        encode_hello(ROUTER_NONCE, router_card.raw, Capabilities(Role.ROUTER, 65536)),
    )
    b.add(
        "msg.hello.router.reference",
        "the router's HELLO, router_card by reference",
        encode_hello(ROUTER_NONCE, digest_entry(ROUTER_ID, RecordKind.CARD, 7), Capabilities()),
    )
    b.add(
        "msg.card_request",
        "CARD_REQUEST: the leaf does not hold the card a HELLO names",
        CardRequest().encode(),
    )

    leaf_signed = HANDSHAKE_CONTEXT + ROUTER_NONCE + LEAF_PUBLIC + ROUTER_PUBLIC
    router_signed = HANDSHAKE_CONTEXT + LEAF_NONCE + ROUTER_PUBLIC + LEAF_PUBLIC
    leaf_sig = LEAF_KEY.sign(leaf_signed)
    router_sig = ROUTER_KEY.sign(router_signed)
    b.add(
        "proof.leaf.signed",
        "what the leaf signs: context + router nonce + leaf key + router key",
        leaf_signed,
    )
    b.add("proof.leaf.signature", "the leaf's link proof signature", leaf_sig)
    b.add("msg.proof.leaf", "the leaf's PROOF", Proof(leaf_sig).encode())
    b.add(
        "proof.router.signed",
        "what the router signs: context + leaf nonce + router key + leaf key",
        router_signed,
    )
    b.add("proof.router.signature", "the router's link proof signature (the leaf verifies it)", router_sig)
    b.add("msg.proof.router", "the router's PROOF", Proof(router_sig).encode())
    b.add("msg.accept", "ACCEPT", Accept().encode())
    b.add(
        "msg.accept.ask_back",
        "ACCEPT 1: a retransmitted ACCEPT, answer with a plain ACCEPT",
        Accept(ask_back=True).encode(),
    )
    b.add("msg.deny", "DENY", Deny().encode())
    b.add(
        "msg.records.links.1",
        "RECORDS carrying links.1: the leaf's first message once established",
        Records((links1.raw,)).encode(),
    )
    b.add(
        "msg.records.card+links",
        "RECORDS carrying card.plain and links.1: the answer to msg.digest.empty",
        Records((card.raw, links1.raw)).encode(),
    )
    b.add(
        "msg.summary.leaf",
        "the leaf's SUMMARY (keepalive) over card.plain and links.1",
        Summary(both.to_bytes(8, "big")).encode(),
    )
    b.add(
        "msg.summary.router",
        "the router's SUMMARY to the leaf while it holds only card.plain",
        Summary(card.summary_hash.to_bytes(8, "big")).encode(),
    )
    b.add(
        "msg.digest.router",
        "the router's DIGEST of [leaf_id, leaf_id] holding card.plain only: "
        "the leaf answers msg.records.links.1",
        Digest(LEAF_ID, LEAF_ID, card_entry).encode(),
    )
    b.add(
        "msg.digest.empty",
        "a DIGEST of [leaf_id, leaf_id] holding nothing: the leaf answers msg.records.card+links",
        Digest(LEAF_ID, LEAF_ID, b"").encode(),
    )
    b.add(
        "msg.digest.leaf",
        "a DIGEST of [leaf_id, leaf_id] naming both of the leaf's records "
        "(entry.card.plain, entry.links.1): the answer is nothing",
        Digest(LEAF_ID, LEAF_ID, card_entry + links_entry).encode(),
    )

    # ------------------------------------------------------------ frames
    b.frames(
        "frames.hello.leaf.value.mtu20",
        "msg.hello.leaf.value.512 over a 20-byte MTU (BLE's default)",
        "msg.hello.leaf.value.512",
        20,
        0,
    )
    b.frames(
        "frames.hello.leaf.value.mtu244",
        "msg.hello.leaf.value.512 over a 244-byte MTU: one whole frame",
        "msg.hello.leaf.value.512",
        244,
        0,
    )
    b.frames(
        "frames.hello.leaf.reference.mtu20",
        "msg.hello.leaf.reference.65536 over a 20-byte MTU",
        "msg.hello.leaf.reference.65536",
        20,
        5,
    )
    b.frames(
        "frames.hello.router.value.mtu20",
        "msg.hello.router.value over a 20-byte MTU (the leaf reassembles it)",
        "msg.hello.router.value",
        20,
        0,
    )
    b.frames(
        "frames.hello.router.value.mtu244",
        "msg.hello.router.value over a 244-byte MTU",
        "msg.hello.router.value",
        244,
        0,
    )
    b.frames(
        "frames.proof.leaf.mtu20", "msg.proof.leaf over a 20-byte MTU (msg_id 1)", "msg.proof.leaf", 20, 1
    )
    b.frames(
        "frames.summary.leaf.mtu20",
        "msg.summary.leaf over a 20-byte MTU: one whole frame",
        "msg.summary.leaf",
        20,
        9,
    )

    return {
        "about": "Test vectors of docs/LEAF_PROFILE.md, made by tests/leaf_vectors.py with the host's "
        "encoders and checked by tests/test_leaf_profile.py. Bytes are lower-case hex.",
        "protocol_version": PROTOCOL_VERSION,
        "vectors": b.vectors,
    }


def main(argv: list[str]) -> int:
    return vectors_main(argv, VECTORS_PATH, ROOT, build, __doc__ or "")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
