"""The leaf profile's test vectors (docs/leaf-profile-vectors.json) against the host.

The committed file is exactly what ``tests/leaf_vectors.py`` makes with the host's encoders; every
vector also decodes with the host's decoders (and, for records, with pycose) to the inputs it names,
so a wrong vector cannot be committed; docs/LEAF_PROFILE.md cites every vector and only those; and
the node library (``firmware_bridge/micropython``) reproduces the records and the proof under real
MicroPython, byte for byte.
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import cbor2
import leaf_vectors
import pytest
import vectors_support
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from micropython_support import require_micropython, run_batch
from pycose.keys.okp import OKPKey
from pycose.messages.sign1message import Sign1Message

from agent.core import ed25519
from agent.core.framing import Reassembler
from agent.core.limits import HANDSHAKE_CONTEXT, PROTOCOL_VERSION
from agent.core.records import (
    CONNECTION_TYPE_CODES,
    MAX_DISTANCE_DM,
    Card,
    ConnectionType,
    Links,
    RecordKind,
    open_record,
    thaw_metadata,
    verify_record,
)
from agent.core.wire import (
    Accept,
    CardRequest,
    Deny,
    Digest,
    Hello,
    Proof,
    Records,
    Role,
    Summary,
    parse_message,
    read_digest_entry,
)

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "LEAF_PROFILE.md"
COMMITTED: dict[str, Any] = json.loads(leaf_vectors.VECTORS_PATH.read_text(encoding="utf-8"))
VECTORS: dict[str, dict[str, Any]] = COMMITTED["vectors"]
RECORDS = ("card.plain", "card.metadata", "card.cut", "links.0", "links.1", "links.3", "router_card")


def data(name: str) -> bytes:
    return bytes.fromhex(VECTORS[name]["hex"])


def inputs(name: str) -> dict[str, Any]:
    found: dict[str, Any] = VECTORS[name]["inputs"]
    return found


LEAF_PUBLIC = data("key.leaf.public")
ROUTER_PUBLIC = data("key.router.public")


def test_the_committed_vectors_are_what_the_host_makes() -> None:
    committed = leaf_vectors.VECTORS_PATH.read_text(encoding="utf-8")
    assert vectors_support.render(leaf_vectors.build()) == committed
    assert COMMITTED["protocol_version"] == PROTOCOL_VERSION == 3
    for name, vector in VECTORS.items():
        assert vector["description"], name
        encoded = vector.get("hex", "") + "".join(vector.get("frames", []))
        assert encoded and re.fullmatch(r"(?:[0-9a-f]{2})+", encoded), name


@pytest.mark.parametrize("who", ["leaf", "router"])
def test_keys_are_rfc8032_keys_of_their_seeds(who: str) -> None:
    private = Ed25519PrivateKey.from_private_bytes(data(f"key.{who}.seed"))
    public = private.public_key().public_bytes_raw()
    assert public == data(f"key.{who}.public")
    assert data(f"key.{who}.peer_id") == public[:8]


def test_constants() -> None:
    assert data("cose.prefix") == bytes.fromhex("d28443a10127a0")
    assert data("cose.sig_structure_prefix") == b"\x84\x6aSignature1\x43\xa1\x01\x27\x40"
    assert data("proof.context") == HANDSHAKE_CONTEXT == b"presence-agent/link-proof/v1"
    assert len(data("nonce.leaf")) == len(data("nonce.router")) == 16


def pycose_verifies(raw: bytes, public_key: bytes) -> bool:
    tagged = cbor2.loads(raw)
    assert tagged.tag == 18
    v = tagged.value
    message = Sign1Message.from_cose_obj([v[0], dict(v[1]), v[2], v[3]], True)
    message.key = OKPKey(crv="Ed25519", x=public_key)
    return bool(message.verify_signature())


@pytest.mark.parametrize("name", RECORDS)
def test_record_vectors_decode_to_their_inputs(name: str) -> None:
    raw, payload = data(f"{name}.cose"), data(f"{name}.payload")
    given = inputs(f"{name}.payload")
    public = bytes.fromhex(given["public_key"])
    record = verify_record(open_record(raw), raw)
    assert (record.public_key, record.counter, record.expiry) == (public, given["counter"], given["expiry"])
    # The envelope, byte for byte: prefix, payload bstr, signature bstr.
    head = bytes([0x58, len(payload)]) if len(payload) < 256 else b"\x59" + len(payload).to_bytes(2, "big")
    assert raw == data("cose.prefix") + head + payload + b"\x58\x40" + data(f"{name}.signature")
    assert data(f"{name}.sig_structure") == data("cose.sig_structure_prefix") + head + payload
    assert ed25519.verify(public, data(f"{name}.sig_structure"), data(f"{name}.signature"))
    assert pycose_verifies(raw, public)
    # The payload is the one deterministic encoding of its fields.
    fields = cbor2.loads(payload)
    assert cbor2.dumps(fields, canonical=True) == payload
    assert fields[:4] == [int(record.kind), public, given["counter"], given["expiry"]]
    body = record.body
    if isinstance(body, Card):
        assert record.kind is RecordKind.CARD
        expected = [given["device_name"], given["os"], given["agent_version"], given["metadata"]]
        assert [body.device_name, body.os, body.agent_version, thaw_metadata(body.metadata)] == expected
        assert fields[4:] == expected
        assert len(body.device_name.encode()) <= 64 and len(body.os.encode()) <= 32
        assert len(body.agent_version.encode()) <= 16
    else:
        assert isinstance(body, Links) and record.kind is RecordKind.LINKS
        expected_links = [
            (bytes.fromhex(pid), ConnectionType(kind), None if d is None else max(0, min(d, MAX_DISTANCE_DM)))
            for pid, kind, d in given["links"]
        ]
        assert [tuple(e) for e in body.entries] == expected_links
        assert fields[4] == [
            pid + bytes([CONNECTION_TYPE_CODES[kind]]) + (b"" if d is None else d.to_bytes(2, "big"))
            for pid, kind, d in expected_links
        ]


def test_the_cut_card_cuts_between_characters() -> None:
    given = inputs("card.cut.payload")
    assert given["device_name"] == "x" + "ü" * 31  # 63 bytes: the 32nd ü would end at byte 65
    assert given["os"] == "o" * 32
    assert given["agent_version"] == "0.1.0+€€€"  # 15 bytes


def test_links_three_is_sorted_by_peer_id_then_type_name() -> None:
    links = inputs("links.3.payload")["links"]
    assert [(pid, kind) for pid, kind, _ in links] == sorted((pid, kind) for pid, kind, _ in links)
    assert [d for _, _, d in links] == [None, 0, 70000]  # AccessPoint (code 2) before Bluetooth (code 1)
    assert data("links.3.payload").endswith(bytes.fromhex("05ffff"))


def test_summaries_are_the_xor_of_truncated_sha256_of_digest_entries() -> None:
    card, links = data("entry.card.plain"), data("entry.links.1")
    assert read_digest_entry(card) == (LEAF_PUBLIC[:8], 1, inputs("card.plain.payload")["counter"])
    assert read_digest_entry(links) == (LEAF_PUBLIC[:8], 2, inputs("links.1.payload")["counter"])
    assert read_digest_entry(data("entry.router_card")) == (ROUTER_PUBLIC[:8], 1, 7)
    assert data("summary_hash.card.plain") == hashlib.sha256(card).digest()
    assert data("summary_hash.links.1") == hashlib.sha256(links).digest()
    first = int.from_bytes(hashlib.sha256(card).digest()[:8], "big")
    second = int.from_bytes(hashlib.sha256(links).digest()[:8], "big")
    assert data("summary.none") == bytes(8)
    assert data("summary.card") == first.to_bytes(8, "big")
    assert data("summary.card+links") == (first ^ second).to_bytes(8, "big")
    for name in ("card.plain", "links.1"):
        record = verify_record(open_record(data(f"{name}.cose")), data(f"{name}.cose"))
        assert record.summary_hash.to_bytes(8, "big") == data(f"summary_hash.{name}")[:8]


def test_proofs_verify_with_the_signers_key() -> None:
    leaf_nonce, router_nonce = data("nonce.leaf"), data("nonce.router")
    assert data("proof.leaf.signed") == HANDSHAKE_CONTEXT + router_nonce + LEAF_PUBLIC + ROUTER_PUBLIC
    assert data("proof.router.signed") == HANDSHAKE_CONTEXT + leaf_nonce + ROUTER_PUBLIC + LEAF_PUBLIC
    for who, key in (("leaf", LEAF_PUBLIC), ("router", ROUTER_PUBLIC)):
        assert ed25519.verify(key, data(f"proof.{who}.signed"), data(f"proof.{who}.signature"))
        assert parse_message(data(f"msg.proof.{who}")) == Proof(data(f"proof.{who}.signature"))


def hello(name: str) -> Hello:
    message = parse_message(data(name))
    assert isinstance(message, Hello)
    assert message.encode() == data(name)
    return message


def test_hello_vectors_parse_as_the_host_reads_them() -> None:
    by_value = hello("msg.hello.leaf.value.512")
    assert (by_value.nonce, by_value.card, by_value.reference) == (
        data("nonce.leaf"),
        data("card.plain.cose"),
        None,
    )
    assert (by_value.capabilities.role, by_value.capabilities.max_message) == (Role.LEAF, 512)
    by_reference = hello("msg.hello.leaf.reference.65536")
    assert by_reference.card == data("entry.card.plain")
    assert by_reference.reference == (LEAF_PUBLIC[:8], 1)
    assert (by_reference.capabilities.role, by_reference.capabilities.max_message) == (Role.LEAF, 65536)
    router = hello("msg.hello.router.value")
    assert (router.nonce, router.card, router.capabilities.role) == (
        data("nonce.router"),
        data("router_card.cose"),
        Role.ROUTER,
    )
    assert hello("msg.hello.router.reference").reference == (ROUTER_PUBLIC[:8], 7)
    # The fixed layout the profile spells out: array(5), 1, 3, bstr(16) nonce, bstr card, [role, max].
    assert data("msg.hello.leaf.reference.65536") == (
        b"\x85\x01\x03\x50"
        + data("nonce.leaf")
        + b"\x4d"
        + data("entry.card.plain")
        + b"\x82\x01\x1a\x00\x01\x00\x00"
    )


def test_control_and_sync_vectors_parse_as_the_host_reads_them() -> None:
    expected = {
        "msg.card_request": CardRequest(),
        "msg.accept": Accept(),
        "msg.accept.ask_back": Accept(ask_back=True),
        "msg.deny": Deny(),
        "msg.records.links.1": Records((data("links.1.cose"),)),
        "msg.records.card+links": Records((data("card.plain.cose"), data("links.1.cose"))),
        "msg.summary.leaf": Summary(data("summary.card+links")),
        "msg.summary.router": Summary(data("summary.card")),
        "msg.digest.router": Digest(LEAF_PUBLIC[:8], LEAF_PUBLIC[:8], data("entry.card.plain")),
        "msg.digest.empty": Digest(LEAF_PUBLIC[:8], LEAF_PUBLIC[:8], b""),
        "msg.digest.leaf": Digest(
            LEAF_PUBLIC[:8], LEAF_PUBLIC[:8], data("entry.card.plain") + data("entry.links.1")
        ),
    }
    assert {name for name in VECTORS if name.startswith("msg.")} == set(expected) | {
        name for name in VECTORS if name.startswith(("msg.hello.", "msg.proof."))
    }
    for name, message in expected.items():
        assert parse_message(data(name)) == message, name
        assert message.encode() == data(name), name
    assert data("msg.accept") == b"\x81\x03" and data("msg.accept.ask_back") == b"\x82\x03\x01"
    assert data("msg.card_request") == b"\x81\x08" and data("msg.deny") == b"\x81\x04"


def test_a_digest_answer_is_what_the_router_lacks() -> None:
    # The leaf's answer rule, checked on the vectors: a record goes back unless the digest names it
    # at its counter or higher.
    own = {(1, 1): data("card.plain.cose"), (2, 3): data("links.1.cose")}
    answers = {
        "msg.digest.router": "msg.records.links.1",
        "msg.digest.empty": "msg.records.card+links",
        "msg.digest.leaf": None,
    }
    for digest_name, answer_name in answers.items():
        digest = parse_message(data(digest_name))
        assert isinstance(digest, Digest)
        theirs = digest.counters()
        lacking = tuple(
            raw for (kind, counter), raw in own.items() if theirs.get((LEAF_PUBLIC[:8], kind), -1) < counter
        )
        if answer_name is None:
            assert lacking == ()
        else:
            assert Records(lacking).encode() == data(answer_name)


@pytest.mark.parametrize("name", sorted(n for n in VECTORS if n.startswith("frames.")))
def test_frames_reassemble_to_their_message(name: str) -> None:
    given = VECTORS[name]["inputs"]
    mtu, message = given["mtu"], data(given["message"])
    frames = [bytes.fromhex(f) for f in VECTORS[name]["frames"]]
    assert all(len(f) <= mtu for f in frames)
    if len(frames) == 1:
        assert frames[0] == b"\x00" + message
    else:
        assert all(f[:2] == bytes([1, given["msg_id"]]) and f[3] == len(frames) for f in frames)
        assert [f[2] for f in frames] == list(range(len(frames)))
        assert all(len(f) == mtu for f in frames[:-1])
    for order in (frames, frames[::-1]):
        stats: collections.Counter[str] = collections.Counter()
        reassembler = Reassembler(mtu, stats)
        out = [reassembler.message(f, 0.0) for f in order]
        assert out[:-1] == [None] * (len(frames) - 1) and out[-1] == message and not stats


def test_the_profile_cites_every_vector_and_no_other() -> None:
    text = DOC.read_text(encoding="utf-8")
    prefixes = "key|cose|proof|nonce|card|links|router_card|entry|summary_hash|summary|msg|frames"
    cited = set(re.findall(rf"`((?:{prefixes})\.[A-Za-z0-9_.+]+|router_card)`", text))
    # A record is cited by its name (card.plain), which stands for its four vectors.
    assert cited - set(VECTORS) - set(RECORDS) == set()
    cited_records = cited & set(RECORDS)
    uncited = {n for n in VECTORS if n not in cited and n.rsplit(".", 1)[0] not in cited_records}
    assert uncited == set()


# ---------------------------------------------------------------- the node library, under MicroPython

NODE_BATCH = """
import hashlib, ed25519, records

V = INPUT["vectors"]
def h(name):
    return bytes.fromhex(V[name]["hex"])

leaf = ed25519.SigningKey(h("key.leaf.seed"))
router = ed25519.SigningKey(h("key.router.seed"))
out = {"leaf_public": leaf.public_key.hex(), "router_public": router.public_key.hex(), "records": {}}
for name in INPUT["records"]:
    given = V[name + ".payload"]["inputs"]
    key = router if name == "router_card" else leaf
    if "links" in given:
        links = [(bytes.fromhex(pid), kind, dist) for pid, kind, dist in given["links"]]
        raw = records.sign_links(key, given["counter"], given["expiry"], links)
    else:
        raw = records.sign_card(key, given["counter"], given["expiry"], given["device_name"], given["os"],
                                given["agent_version"], given["metadata"])
    out["records"][name] = raw.hex()
out["proof"] = leaf.sign(h("proof.leaf.signed")).hex()
ok = ed25519.verify(router.public_key, h("proof.router.signed"), h("proof.router.signature"))
out["router_proof_ok"] = ok
router_card = records.decode_record(h("router_card.cose"))
out["router_card"] = [router_card.public_key.hex(), router_card.counter, router_card.body.device_name]
s = 0
for entry in ("entry.card.plain", "entry.links.1"):
    s ^= int.from_bytes(hashlib.sha256(h(entry)).digest()[:8], "big")
out["summary"] = s.to_bytes(8, "big").hex()
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def node() -> Any:
    require_micropython()
    return run_batch(NODE_BATCH, {"vectors": VECTORS, "records": list(RECORDS)})


def test_the_node_library_makes_the_same_records_under_micropython(node: Any) -> None:
    assert (node["leaf_public"], node["router_public"]) == (LEAF_PUBLIC.hex(), ROUTER_PUBLIC.hex())
    for name in RECORDS:
        assert node["records"][name] == VECTORS[f"{name}.cose"]["hex"], name


def test_the_node_library_signs_and_checks_proofs_and_sums_under_micropython(node: Any) -> None:
    assert node["proof"] == VECTORS["proof.leaf.signature"]["hex"]
    assert node["router_proof_ok"] is True
    assert node["router_card"] == [ROUTER_PUBLIC.hex(), 7, "pi-gateway"]
    assert node["summary"] == VECTORS["summary.card+links"]["hex"]
