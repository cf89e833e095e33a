"""The committed seed corpus, generated from the real encoders: ``python -m tests.fuzz.seeds [--check]``.

Writes ``tests/fuzz/corpus/<target>/<name>`` for every target (replacing the
files this script wrote before; inputs a long run merged in are kept), or with
``--check`` only reports whether the committed files match. Every seed is a
valid input of its target's format (a signed record, a handshake that
completes, a beacon, a request line, a profile, a retained message), plus a few
near-misses, so the fuzzer starts deep inside each decoder.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.core import records as rec
from agent.core.keys import peer_key_string
from agent.core.records import ConnectionType, LinkEntry, Links, RecordKind, make_card
from agent.core.wire import (
    Accept,
    CardRequest,
    Deny,
    Digest,
    MessageType,
    Proof,
    Records,
    Summary,
    digest_entry,
    encode_hello,
    encode_message,
    frames_for,
)
from agent.transports.lan import BEACON_MAGIC

from . import world
from .contract import Writer

CORPUS: Final = Path(__file__).parent / "corpus"
ROOT: Final = Path(__file__).resolve().parents[2]
#: Seeds this script writes are named ``s-<name>``; a merge names files by hash, never so.
PREFIX: Final = "s-"

Seeds = Iterator[tuple[str, bytes]]


def _big_card() -> bytes:
    """A card with nested metadata of about 1 KiB: fragmented at the fuzzed MTU, general decoder."""
    metadata = {"room": "kitchen", "tags": ["a", "b", {"deep": [1, 2.5, None, True]}], "blob": "x" * 900}
    return world.card(4, counter=3, metadata=metadata).raw


def _stranger_records() -> list[bytes]:
    return [world.card(5).raw, world.links(5, 2, [3, 6]).raw, world.card(6, metadata={"k": -(2**63)}).raw]


# ---------------------------------------------------------------- per target


def frames() -> Seeds:
    card = _big_card()
    records = encode_message(MessageType.RECORDS, card)
    yield "records-fragmented", Writer().u8(world.MTU - 32).chunk(records).bytes()
    yield "whole-summary", Writer().u8(0).chunk(Summary(b"\x01" * 8).encode()).bytes()
    yield "smallest-mtu", Writer().u8(0).chunk(records[:200]).bytes()
    junk = Writer().u8(world.MTU - 32).chunk(records)
    for i, frame in enumerate(frames_for(records, world.MTU, 9)[:3]):  # another id, never completed
        junk.u8(2 * i).chunk(frame).u8(1)
    for msg_id in range(6):  # more partials than the bound
        junk.u8(0).chunk(bytes([1, msg_id, 0, 3]) + b"part")
    junk.u8(0xF1).chunk(bytes([1, 2, 1, 2]) + b"x")  # a sweep after a long gap
    yield "interleaved-partials", junk.bytes()
    yield (
        "restarted-id",
        Writer()
        .u8(0)
        .chunk(b"")
        .u8(0)
        .chunk(b"\x01\x05\x00\x03abc")
        .u8(0)
        .chunk(b"\x01\x05\x00\x04abc")
        .bytes(),
    )


def message() -> Seeds:
    nonce = b"\x33" * 16
    card = world.plain_card(world.REMOTE)
    yield "hello", encode_hello(nonce, card)
    yield "hello-reference", encode_hello(nonce, digest_entry(world.key(2).peer_id, RecordKind.CARD, 1))
    yield "hello-v1", encode_message(MessageType.HELLO, 1, nonce, card)
    yield "proof", Proof(b"\x44" * 64).encode()
    yield "accept", Accept().encode()
    yield "accept-1", Accept(ask_back=True).encode()
    yield "deny", Deny().encode()
    yield "card-request", CardRequest().encode()
    yield "records", Records(tuple(_stranger_records())).encode()
    yield "summary", Summary(b"\x55" * 8).encode()
    entries = b"".join(digest_entry(world.key(s).peer_id, kind, 1) for s in (3, 5) for kind in RecordKind)
    yield "digest", Digest(b"\x00" * 8, b"\xff" * 8, entries).encode()


def record() -> Seeds:
    yield "card", world.plain_card(world.REMOTE)
    yield "card-metadata", _big_card()
    yield "links", world.links(world.REMOTE, 4, [1, 3, 4, 5]).raw
    yield "links-empty", world.links(5, 2, []).raw
    yield "stale-card", world.card(3, counter=2).raw
    yield "expired-card", world.card(6, expiry=world.NOW - 1).raw
    yield "own-card", world.card(world.LOCAL, counter=9).raw
    big = world.links(6, 7, [n % 250 + 1 for n in range(64)]).raw  # 64 connections, a 2-byte bstr head
    yield "links-64", big


def record_payload() -> Seeds:
    k = world.key(3).public
    expiry = int(world.NOW + world.DAY)
    yield "card", rec.card_payload(k, 6, expiry, make_card("n", "linux", "0.1.0", {}))
    meta = {"a": [1, {"b": None}], "c": 1.5, "d": "é", "e": False, "f": -7}
    yield "card-metadata", rec.card_payload(k, 6, expiry, make_card("n" * 64, "o" * 32, "v" * 16, meta))
    entries = (
        LinkEntry(world.key(1).peer_id, ConnectionType.RADIO, 65535),
        LinkEntry(world.key(2).peer_id, ConnectionType.BLUETOOTH),
    )
    yield "links", rec.links_payload(k, 7, expiry, Links(entries))
    yield "links-counter-wide", rec.links_payload(k, 2**32 - 1, 2**32 - 1, Links(()))


def store_rows() -> Seeds:
    def row(raw: bytes, key: object = None, kind: object = None, counter: object = None) -> Writer:
        env = rec.open_record(raw)
        out = Writer()
        for value in (
            env.public_key if key is None else key,
            int(env.kind) if kind is None else kind,
            env.counter if counter is None else counter,
            raw,
        ):
            if isinstance(value, bytes):
                out.u8(0).chunk(value)
            elif isinstance(value, str):
                out.u8(1).chunk(value.encode())
            else:
                assert isinstance(value, int)
                out.u8(2).chunk(value.to_bytes(8, "big", signed=True))
        return out

    good = [world.plain_card(world.REMOTE), world.links(world.REMOTE, 2, [1]).raw, _big_card()]
    rows = Writer().u8(len(good))
    for raw in good:
        rows.raw(row(raw).bytes())
    yield "good", rows.bytes()
    card = world.plain_card(5)
    mixed = Writer().u8(4).raw(row(card, counter=9).bytes()).raw(row(card, kind="card").bytes())
    mixed.raw(row(world.card(6, expiry=world.NOW - 5).raw).bytes())
    mixed.raw(row(world.links(6, 3, []).raw, key=world.key(5).public).bytes())
    yield "mismatched-columns", mixed.bytes()


def _engine_input(mode: int, frames_in: list[bytes], tail: bytes = b"") -> bytes:
    out = Writer().u8(mode)
    for frame in frames_in:
        out.u8(0).chunk(frame)
    return out.raw(tail).bytes()


def _frames(message: bytes) -> list[bytes]:
    return frames_for(message, world.MTU, 7)


def engine() -> Seeds:
    nonce = world.fresh().nonce
    remote_card = world.plain_card(world.REMOTE)
    handshake = [
        *_frames(encode_hello(b"\x21" * 16, remote_card)),
        *_frames(Proof(world.proof(world.REMOTE, nonce, world.LOCAL)).encode()),
        *_frames(Accept().encode()),
    ]
    after = [
        *_frames(Records(tuple(_stranger_records())).encode()),
        *_frames(Records((_big_card(),)).encode()),
        *_frames(Summary(b"\x66" * 8).encode()),
    ]
    timers = Writer().u8(1).u8(30).u8(2).u16(3600).u8(1).u8(200).bytes()
    yield "handshake", _engine_input(0, handshake)
    yield "handshake-records-timers", _engine_input(0, handshake + after, timers)
    yield "handshake-denied", _engine_input(2, handshake)
    slow = Writer().u8(1).u8(250).u8(2).u16(120).u8(1).u8(250).bytes()
    yield "handshake-slow-link", _engine_input(4, [*handshake, *after], slow)
    # By reference to the card the engine holds (stranger 3), proved by that key.
    held = world.key(world.STRANGERS[0])
    by_ref = [
        *_frames(encode_hello(b"\x23" * 16, digest_entry(held.peer_id, RecordKind.CARD, 1))),
        *_frames(Proof(world.proof(world.STRANGERS[0], nonce, world.LOCAL)).encode()),
        *_frames(Accept(ask_back=True).encode()),
    ]
    yield "hello-by-reference", _engine_input(0, by_ref)
    unknown = [
        *_frames(encode_hello(b"\x24" * 16, digest_entry(world.key(2).peer_id, RecordKind.CARD, 1))),
        *_frames(Proof(world.proof(world.REMOTE, nonce, world.LOCAL)).encode()),
        *_frames(encode_hello(b"\x24" * 16, remote_card)),
        *_frames(Accept().encode()),
    ]
    yield "card-requested", _engine_input(0, unknown)
    yield "established-records", _engine_input(1, after, timers)
    entries = b"".join(digest_entry(world.key(s).peer_id, RecordKind.CARD, 1) for s in (1, 2, 5))
    sync = [
        *_frames(Summary(b"\x77" * 8).encode()),
        *_frames(Summary(b"\x78" * 8).encode()),
        *_frames(Digest(b"\x00" * 8, b"\xff" * 8, entries).encode()),
    ]
    yield "established-sync", _engine_input(1, sync, Writer().u8(1).u8(120).bytes())
    newer = [
        *_frames(Records((world.card(world.REMOTE, counter=5, metadata={"v": 2}).raw,)).encode()),
        *_frames(Records((world.card(world.LOCAL, counter=40).raw,)).encode()),  # our own, newer: recovery
        *_frames(Records((world.links(world.REMOTE, 6, [world.LOCAL, 5]).raw,)).encode()),
    ]
    yield "established-newer", _engine_input(1, newer, Writer().u8(3).u8(2).u16(65000).bytes())
    yield "established-deny", _engine_input(1, _frames(Deny().encode()))


def hello() -> Seeds:
    yield "card", world.plain_card(world.REMOTE)
    yield "card-metadata", _big_card()
    yield "reference-held", digest_entry(world.key(world.STRANGERS[0]).peer_id, RecordKind.CARD, 1)
    yield "reference-unknown", digest_entry(world.key(world.REMOTE).peer_id, RecordKind.CARD, 1)
    yield "own-card", world.card(world.LOCAL).raw
    yield "expired-card", world.card(world.REMOTE, expiry=world.NOW - 10).raw
    yield "links", world.links(world.REMOTE, 2, [1]).raw


def _beacon(seed: int, port: int) -> bytes:
    return BEACON_MAGIC + world.key(seed).public + port.to_bytes(2, "big")


def beacon() -> Seeds:
    def datagram(data: bytes, address: int = 0) -> Writer:
        return Writer().u8(4 * address).u8(len(data)).raw(data)

    yield "one", datagram(_beacon(world.REMOTE, 4000)).bytes()
    many = Writer()
    for seed in (2, 3, 4, 5, 6):
        for address in range(4):
            many.raw(datagram(_beacon(seed, 4000 + address), address).bytes())
        many.u8(1).u8(25)
    many.u8(2).raw(datagram(_beacon(3, 4000)).bytes()).u8(3).raw(datagram(_beacon(3, 4001)).bytes())
    yield "many-then-fail", many.bytes()
    yield "own-key", datagram(_beacon(world.LOCAL, 4000)).bytes()
    yield "port-zero", datagram(_beacon(world.REMOTE, 0)).bytes()
    yield "short", datagram(_beacon(world.REMOTE, 4000)[:37]).bytes()


def control() -> Seeds:
    yield "graph", b'{"op":"graph"}\n'
    yield "watch", b'{"op": "watch"}\n'
    yield "status", b'{"op":"status"}\n'
    yield "metadata-get", b'{"op":"metadata_get"}'
    yield "metadata-set", b'{"op":"metadata_set","json":"{\\"room\\": [1, 2.5, null, \\"k\\"]}"}\n'
    yield "metadata-set-bad", b'{"op":"metadata_set","json":"[1]"}\n'
    yield "nested", b'{"op":' + b"[" * 40 + b"]" * 40 + b"}\n"
    yield "not-utf8", b'{"op":"gr\xffaph"}\n'
    yield "two-lines", b'{"op":"graph"}\n{"op":"status"}\n'


def config() -> Seeds:
    for profile in sorted((ROOT / "hw_configs").glob("*.toml")):
        yield profile.stem, profile.read_bytes()
    yield (
        "mqtt",
        (
            b'[agent]\nname = "gate-3"\nlog_level = "debug"\n'
            b'[mqtt]\nbroker = "mqtts://broker.example:8883"\nusername = "gate-3"\n'
            b'password_env = "MQTT_PASS"\nca_file = "/etc/ca.pem"\ntopic_root = "site/a"\nqos = 2\n'
            b"keepalive = 60\ncoalesce = 0.25\nhomeassistant = true\n"
            b'[presence]\nrecord_ttl = 86400\nhandler_timeout = 2.5\n[lan]\ninterfaces = ["eth0", "wlan0"]\n'
        ),
    )
    yield "empty", b""
    yield "nested", b"[lan]\ninterfaces = " + b"[" * 40 + b'"eth0"' + b"]" * 40 + b"\n"  # a type error
    yield "inline-tables", b"[mqtt]\nbroker = {a = {b = {c = [1, {d = 2}]}}}\n"


def identity() -> Seeds:
    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    none = serialization.NoEncryption()
    key = world.key(world.LOCAL).private.private_bytes(pem, pkcs8, none)
    yield "ed25519-pem", key
    yield "ed25519-der", world.key(3).private.private_bytes(serialization.Encoding.DER, pkcs8, none)
    yield "x25519-pem", X25519PrivateKey.from_private_bytes(b"\x07" * 32).private_bytes(pem, pkcs8, none)
    yield "truncated", key[:-30]


def mqtt_fleet() -> Seeds:
    agent = peer_key_string(world.key(world.LOCAL).public)
    other = peer_key_string(world.key(3).public)
    remote = peer_key_string(world.key(world.REMOTE).public)

    def message(topic: str, payload: bytes) -> Writer:
        return Writer().chunk(topic.encode()).chunk(payload)

    base = f"presence/agents/{agent}"
    view = Writer()
    view.raw(message(f"{base}/status", b"online").bytes())
    view.raw(message(f"{base}/peers/{remote}/card", world.plain_card(world.REMOTE)).bytes())
    view.raw(message(f"{base}/peers/{remote}/links", world.links(world.REMOTE, 2, [1, 3]).raw).bytes())
    view.raw(message(f"presence/agents/{other}/status", b"online").bytes())
    view.raw(message(f"presence/agents/{other}/peers/{remote}/links", world.links(2, 4, [3]).raw).bytes())
    yield "one-view", view.bytes()
    churn = Writer()
    churn.raw(message(f"{base}/status", b"online").bytes())
    churn.raw(message(f"{base}/peers/{remote}/card", world.card(2, counter=3).raw).bytes())
    churn.raw(message(f"{base}/peers/{remote}/card", world.plain_card(world.REMOTE)).bytes())  # replayed
    churn.raw(message(f"{base}/peers/{remote}/card", b"").bytes())  # cleared
    churn.raw(message(f"{base}/peers/{remote}/links", world.plain_card(world.REMOTE)).bytes())  # wrong kind
    churn.raw(message(f"{base}/peers/{other}/card", world.plain_card(world.REMOTE)).bytes())  # wrong key
    churn.raw(message(f"{base}/graph", b"{}").bytes())
    churn.raw(message(f"{base}/status", b"offline").bytes())
    yield "churn", churn.bytes()


GENERATORS: Final[dict[str, Callable[[], Seeds]]] = {
    "frames": frames,
    "message": message,
    "record": record,
    "record_payload": record_payload,
    "store_rows": store_rows,
    "engine": engine,
    "hello": hello,
    "beacon": beacon,
    "control": control,
    "config": config,
    "identity": identity,
    "mqtt_fleet": mqtt_fleet,
}


def generate() -> dict[str, dict[str, bytes]]:
    """Every seed: target -> file name -> bytes."""
    return {target: {PREFIX + name: data for name, data in gen()} for target, gen in GENERATORS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with the committed corpus")
    args = parser.parse_args(argv)
    stale = []
    for target, seeds in generate().items():
        folder = CORPUS / target
        old = {p.name for p in folder.glob(PREFIX + "*")} if folder.is_dir() else set()
        for name in old - seeds.keys():
            stale.append(f"{target}/{name} (no longer generated)")
            if not args.check:
                (folder / name).unlink()
        for name, data in seeds.items():
            path = folder / name
            if path.is_file() and path.read_bytes() == data:
                continue
            stale.append(f"{target}/{name}")
            if not args.check:
                folder.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
    if args.check:
        for line in stale:
            print(f"differs: {line}", file=sys.stderr)
        return 1 if stale else 0
    print(f"wrote {len(stale)} seed file(s) under {CORPUS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
