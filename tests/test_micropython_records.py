"""The node library's card and links records under real MicroPython, against agent.core.records.

Records signed on MicroPython are byte-identical to ``sign_record``'s for the same key, counter,
expiry and body (a fleet member's card with its certificate too), and the host opens and verifies
them; host-made records open and verify on MicroPython; and every malformed record is refused on
MicroPython with the reason the host gives. One MicroPython run for the module
(see tests/micropython_support.py).
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from micropython_support import require_micropython, run_batch

from agent.core import cose
from agent.core.certs import issue_certificate
from agent.core.errors import RecordError
from agent.core.records import (
    Card,
    ConnectionType,
    LinkEntry,
    Links,
    decode_record,
    make_card,
    open_record,
    sign_record,
    thaw_metadata,
    verify_record,
)

rng = random.Random(9052)
SEED = bytes(range(32))
KEY = Ed25519PrivateKey.from_private_bytes(SEED)
PUBLIC = KEY.public_key().public_bytes_raw()

NESTED = {"room": "kitchen", "n": [1, -2, None, True, False], "deep": {"a": {"b": {"c": []}}}, "": {}}
NESTED["big"] = [2**64 - 1, -(2**63), 23, 24, 255, 256, 65535, 65536, 2**32]
LONG_NAME = "ü" * 40  # 80 bytes: cut at 64, between characters
CARDS: list[tuple[int, int, str, str, str, dict[str, Any]]] = [
    (1, 1_800_000_000, "pi-kitchen", "MicroPython 1.27.0 esp32", "0.1.0", {}),
    (2**32 - 1, 0, "node", "MicroPython 1.27.0 rp2", "0.1.0", NESTED),
    (
        500,
        2**32 - 1,
        "Küche 🌡 温度",
        "MicroPython",
        "0.1.0",
        {"ключ": "значение", "emoji": "🙂", "ctl": 'a\x01"\\'},
    ),
    (24, 24, LONG_NAME, "o" * 40, "v" * 20, {"key" * 30: "x" * 300}),
    (7, 8, "", "", "", {"a" * n: n for n in range(1, 30)}),
]

#: A fleet CA's certificate for KEY, as `presence-agent fleet-ca issue` writes it.
CERTIFICATE = issue_certificate(
    Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64))),
    7,
    PUBLIC,
    {"site": "depot-3", "role": "sensor"},
    1_790_000_000,
    1_900_000_000,
).raw
CERTIFIED_CARD = (11, 1_800_000_000, "node-dock", "MicroPython 1.27.0 esp32", "0.1.0", {"room": "dock"})

TYPES = list(ConnectionType)
CODES = {"Bluetooth": 1, "AccessPoint": 2, "P2PWiFi": 3, "WebSocket": 4, "Radio": 5}


def random_links(n: int) -> list[tuple[bytes, ConnectionType, int | None]]:
    distances = [None, 0, 1, 12, 65535, 70000, -5]
    return [(rng.randbytes(8), rng.choice(TYPES), rng.choice(distances)) for _ in range(n)]


LINKS = [
    (3, 100, random_links(0)),
    (4, 100, random_links(1)),
    (5, 2**31, random_links(8)),
    (6, 9, random_links(64)),
]
LINKS.append((9, 10, [(b"\x01" * 8, ConnectionType.RADIO, None), (b"\x02" * 8, ConnectionType.BLUETOOTH, 0)]))


def host_card(counter: int, expiry: int, name: str, os: str, version: str, meta: dict[str, Any]) -> bytes:
    return sign_record(KEY, PUBLIC, counter, expiry, make_card(name, os, version, meta)).raw


def host_certified_card() -> bytes:
    card = dataclasses.replace(make_card(*CERTIFIED_CARD[2:]), certificate=CERTIFICATE)
    return sign_record(KEY, PUBLIC, CERTIFIED_CARD[0], CERTIFIED_CARD[1], card).raw


def host_links(counter: int, expiry: int, entries: list[tuple[bytes, ConnectionType, int | None]]) -> bytes:
    links = Links(tuple(LinkEntry(pid, kind, dist) for pid, kind, dist in entries))
    return sign_record(KEY, PUBLIC, counter, expiry, links).raw


def signed(payload: object) -> bytes:
    """A validly signed COSE_Sign1 around any payload (bytes as given, else canonical CBOR)."""
    raw = payload if isinstance(payload, bytes) else cbor2.dumps(payload, canonical=True)
    return cose.sign(KEY, raw)


def card_fields(**change: Any) -> list[Any]:
    fields: list[Any] = [1, PUBLIC, 5, 1000, "name", "os", "1.0", {}]
    for index, value in change.items():
        fields[int(index[1:])] = value
    return fields


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"k": value}
    return value


GOOD_CARD = host_card(*CARDS[0])
GOOD_LINKS = host_links(*LINKS[2])
SMALL_ORDER = bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")
CARD_PREFIX = b"\x88\x01\x58\x20" + PUBLIC
#: Malformed records: (name, raw). Each is refused on MicroPython with the host's reason.
MALFORMED: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("truncated", GOOD_CARD[:-1]),
    ("trailing byte", GOOD_CARD + b"\x00"),
    ("oversized", GOOD_CARD + bytes(4097 - len(GOOD_CARD))),
    ("untagged", GOOD_CARD[1:]),
    ("other algorithm", GOOD_CARD.replace(b"\xa1\x01\x27", b"\xa1\x01\x26", 1)),
    (
        "non-shortest payload head",
        b"\xd2\x84\x43\xa1\x01\x27\xa0\x58\x05" + bytes(5) + b"\x58\x40" + bytes(64),
    ),
    ("bad signature", GOOD_CARD[:-1] + bytes([GOOD_CARD[-1] ^ 1])),
    ("links bad signature", GOOD_LINKS[:-5] + bytes([GOOD_LINKS[-5] ^ 0x80]) + GOOD_LINKS[-4:]),
    ("payload not an array", signed({"a": 1})),
    ("short array", signed([1, PUBLIC, 5])),
    ("unknown kind", signed(card_fields(f0=3))),
    ("short key", signed(card_fields(f1=PUBLIC[:31]))),
    ("small-order key", signed(card_fields(f1=SMALL_ORDER))),
    ("counter beyond uint32", signed(card_fields(f2=2**32))),
    ("negative expiry", signed(card_fields(f3=-1))),
    (
        "non-shortest counter",
        signed(CARD_PREFIX + b"\x18\x05\x19\x03\xe8" + cbor2.dumps(["n", "o", "v", {}])[1:]),
    ),
    ("indefinite array", signed(b"\x9f" + cbor2.dumps(card_fields())[1:] + b"\xff")),
    ("unsorted map", signed(cbor2.dumps(card_fields())[:-1] + b"\xa2\x62bb\x01\x61a\x02")),
    ("duplicate key", signed(cbor2.dumps(card_fields())[:-1] + b"\xa2\x61a\x01\x61a\x02")),
    ("surrogate in name", signed(CARD_PREFIX + b"\x05\x19\x03\xe8\x63\xed\xa0\x80" + b"\x62os\x631.0\xa0")),
    ("overlong UTF-8", signed(CARD_PREFIX + b"\x05\x19\x03\xe8\x62\xc0\x80" + b"\x62os\x631.0\xa0")),
    ("name of 65 bytes", signed(card_fields(f4="x" * 65))),
    ("os of 33 bytes", signed(card_fields(f5="x" * 33))),
    ("version of 17 bytes", signed(card_fields(f6="x" * 17))),
    ("name not text", signed(card_fields(f4=b"name"))),
    ("metadata not a map", signed(card_fields(f7=[]))),
    ("metadata 17 deep", signed(card_fields(f7=nested(17)))),
    ("metadata int key", signed(card_fields(f7={1: "x"}))),
    ("metadata JSON over 4096 bytes", signed(card_fields(f7={"c": "\x01" * 700}))),
    ("metadata undefined", signed(cbor2.dumps(card_fields())[:-1] + b"\xa1\x61a\xf7")),
    ("metadata other tag", signed(cbor2.dumps(card_fields())[:-1] + b"\xa1\x61a\xc1\x01")),
    ("card with 9 fields", signed([*card_fields(), 0])),
    ("card with an empty certificate", signed([*card_fields(), b""])),
    ("card with 10 fields", signed([*card_fields(), b"cert", b"more"])),
    ("links not a list", signed([2, PUBLIC, 5, 6, b"x"])),
    ("links entry too short", signed([2, PUBLIC, 5, 6, [b"\x01" * 8]])),
    ("links entry of 10 bytes", signed([2, PUBLIC, 5, 6, [b"\x01" * 8 + b"\x01\x00"]])),
    ("links unknown type code", signed([2, PUBLIC, 5, 6, [b"\x01" * 8 + b"\x09"]])),
    ("links entry not bytes", signed([2, PUBLIC, 5, 6, ["x" * 9]])),
    ("65 links", signed([2, PUBLIC, 5, 6, [b"\x01" * 8 + b"\x01"] * 65])),
]
#: Host-made records the node opens, one per shape (metadata, links, the cut names).
HOST_RECORDS = [host_card(*c) for c in CARDS] + [host_certified_card()]
HOST_RECORDS += [host_links(*link) for link in LINKS]

BATCH = """
import ed25519, records, cose

def jsonable(value):
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value

def described(rec):
    if rec.kind == records.CARD:
        b = rec.body
        body = [b.device_name, b.os, b.agent_version, b.metadata, b.certificate]
    else:
        body = [[pid.hex(), code, dist] for pid, code, dist in rec.body]
    return [rec.kind, rec.public_key.hex(), rec.counter, rec.expiry, body, rec.verified]

key = ed25519.SigningKey(bytes.fromhex(INPUT["seed"]))
out = {"public": key.public_key.hex(), "cards": [], "links": [], "opened": [], "refused": []}
for counter, expiry, name, os, version, meta in INPUT["cards"]:
    out["cards"].append(records.sign_card(key, counter, expiry, name, os, version, meta).hex())
counter, expiry, name, os, version, meta = INPUT["certified"]
certificate = bytes.fromhex(INPUT["certificate"])
out["certified"] = records.sign_card(key, counter, expiry, name, os, version, meta, certificate).hex()
for counter, expiry, entries in INPUT["links"]:
    links = [(bytes.fromhex(pid), kind, dist) for pid, kind, dist in entries]
    out["links"].append(records.sign_links(key, counter, expiry, links).hex())
for raw in INPUT["host_records"]:
    out["opened"].append(jsonable(described(records.decode_record(bytes.fromhex(raw)))))
for name, raw in INPUT["malformed"]:
    try:
        records.decode_record(bytes.fromhex(raw))
        out["refused"].append([name, "accepted", ""])
    except records.RecordError as exc:
        out["refused"].append([name, exc.reason, str(exc)])

errors = []
def attempt(name, fn, *args):
    try:
        fn(*args)
        errors.append([name, "accepted", ""])
    except ValueError as exc:
        errors.append([name, type(exc).__name__, str(exc)])

attempt("counter beyond uint32", records.sign_card, key, 2**32, 0, "n", "o", "v", {})
attempt("negative expiry", records.sign_links, key, 1, -1, [])
attempt("float metadata", records.sign_card, key, 1, 1, "n", "o", "v", {"t": 21.5})
attempt("metadata not a dict", records.sign_card, key, 1, 1, "n", "o", "v", [1])
attempt("metadata too deep", records.sign_card, key, 1, 1, "n", "o", "v", INPUT["deep"])
attempt("metadata too large", records.sign_card, key, 1, 1, "n", "o", "v", {"x": "y" * 4090})
attempt("certificate not bytes", records.sign_card, key, 1, 1, "n", "o", "v", {}, "cert")
attempt("certificate over 4096 bytes", records.sign_card, key, 1, 1, "n", "o", "v", {}, bytes(4097))
attempt("65 links", records.sign_links, key, 1, 1, [(bytes(8), 1, None)] * 65)
attempt("bad peer id", records.sign_links, key, 1, 1, [(bytes(7), 1, None)])
attempt("unknown type", records.sign_links, key, 1, 1, [(bytes(8), "Carrier pigeon", None)])
attempt("float record from host", records.decode_record, bytes.fromhex(INPUT["float_record"]))
out["errors"] = errors
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def results() -> Any:
    require_micropython()
    inputs = {
        "seed": SEED.hex(),
        "cards": CARDS,
        "certified": CERTIFIED_CARD,
        "certificate": CERTIFICATE.hex(),
        "links": [(c, e, [(p.hex(), t.value, d) for p, t, d in entries]) for c, e, entries in LINKS],
        "host_records": [raw.hex() for raw in HOST_RECORDS],
        "malformed": [(name, raw.hex()) for name, raw in MALFORMED],
        "deep": nested(17),
        "float_record": host_card(1, 1, "n", "o", "v", {"t": 21.5}).hex(),
    }
    return run_batch(BATCH, inputs)


def test_same_public_key(results: Any) -> None:
    assert results["public"] == PUBLIC.hex()


@pytest.mark.parametrize("index", range(len(CARDS)))
def test_cards_signed_on_micropython_are_byte_identical_to_the_hosts(results: Any, index: int) -> None:
    raw = bytes.fromhex(results["cards"][index])
    assert raw == host_card(*CARDS[index])
    record = verify_record(open_record(raw), raw)
    assert isinstance(record.body, Card)
    assert record.body.device_name == make_card(*CARDS[index][2:]).device_name


def test_a_fleet_members_card_signed_on_micropython_carries_its_certificate(results: Any) -> None:
    raw = bytes.fromhex(results["certified"])
    assert raw == host_certified_card()
    record = decode_record(raw)
    assert isinstance(record.body, Card) and record.body.certificate == CERTIFICATE


@pytest.mark.parametrize("index", range(len(LINKS)), ids=[f"{len(e)} entries" for _, _, e in LINKS])
def test_links_signed_on_micropython_are_byte_identical_to_the_hosts(results: Any, index: int) -> None:
    raw = bytes.fromhex(results["links"][index])
    assert raw == host_links(*LINKS[index])
    record = decode_record(raw)
    assert isinstance(record.body, Links)
    assert len(record.body.entries) == len(LINKS[index][2])


def test_host_records_open_and_verify_on_micropython(results: Any) -> None:
    opened = results["opened"]
    assert len(opened) == len(HOST_RECORDS)
    for raw, got in zip(HOST_RECORDS, opened, strict=True):
        record = decode_record(raw)
        if isinstance(record.body, Card):
            body: list[Any] = [record.body.device_name, record.body.os, record.body.agent_version]
            body += [thaw_metadata(record.body.metadata), {"hex": record.body.certificate.hex()}]
        else:
            body = [
                [e.peer_id.hex(), CODES[e.connection_type.value], e.distance_dm] for e in record.body.entries
            ]
        assert got == [int(record.kind), PUBLIC.hex(), record.counter, record.expiry, body, True]


def host_reason(raw: bytes) -> str:
    try:
        decode_record(raw)
    except RecordError as exc:
        return exc.reason
    return "accepted"


@pytest.mark.parametrize("index", range(len(MALFORMED)), ids=[name for name, _ in MALFORMED])
def test_malformed_records_are_refused_on_micropython_as_on_the_host(results: Any, index: int) -> None:
    name, raw = MALFORMED[index]
    got_name, reason, message = results["refused"][index]
    assert got_name == name
    assert reason == host_reason(raw) != "accepted", message
    assert message.startswith(reason + ": ") and len(message) > len(reason) + 4


def test_invalid_bodies_are_refused_before_signing(results: Any) -> None:
    errors = {name: (kind, message) for name, kind, message in results["errors"]}
    assert errors["counter beyond uint32"][0] == "ValueError"
    assert errors["negative expiry"][0] == "ValueError"
    assert errors["float metadata"] == (
        "MetadataError",
        "metadata floats are not supported on the node (use an int or a string)",
    )
    assert errors["metadata not a dict"][0] == "MetadataError"
    assert "deeper than 16" in errors["metadata too deep"][1]
    assert "limit is 4096" in errors["metadata too large"][1]
    assert "at most 64" in errors["65 links"][1]
    assert "peer id is 8 bytes" in errors["bad peer id"][1]
    assert "unknown connection type" in errors["unknown type"][1]
    assert "at most 4096 bytes" in errors["certificate not bytes"][1]
    assert errors["certificate over 4096 bytes"][0] == "ValueError"


def test_a_host_card_with_float_metadata_is_refused_on_the_node_by_design(results: Any) -> None:
    # The host accepts finite floats; the node (single-precision floats) refuses them clearly.
    kind, message = next((k, m) for n, k, m in results["errors"] if n == "float record from host")
    assert kind == "RecordError"
    assert message.startswith("malformed: ") and "floats are not supported on the node" in message
