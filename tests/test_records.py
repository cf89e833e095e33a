"""Specification of the signed record codec (agent.core.records / agent.core.cose).

Every record is deterministic CBOR signed whole as a COSE_Sign1 with EdDSA
(Ed25519). These tests state what a receiver can rely on: what is signed comes
back unchanged, the same inputs give the same bytes, any change to the bytes is
rejected with a :class:`RecordError` (and nothing else), any standard COSE
library verifies our records, and the 4 KiB budget holds.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

import cbor2
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st
from pycose.keys.okp import OKPKey
from pycose.messages.sign1message import Sign1Message
from strategies import (
    QUICK,
    THOROUGH,
    bodies,
    cards,
    connection_types,
    distances_dm,
    json_values,
    key_pair,
    links_bodies,
    metadata_objects,
    peer_ids,
    private_keys,
    raw_public_key,
    reorder_keys,
    uint32s,
)

from agent.core import cose
from agent.core.errors import MetadataError, MetadataTooLargeError, RecordError
from agent.core.limits import (
    MAX_CONNECTIONS_PER_RECORD,
    MAX_COUNTER,
    MAX_DEVICE_NAME_BYTES,
    MAX_METADATA_DEPTH,
    MAX_METADATA_JSON_BYTES,
    MAX_RECORD_BYTES,
)
from agent.core.records import (
    MAX_DISTANCE_DM,
    Card,
    ConnectionType,
    LinkEntry,
    Links,
    Record,
    RecordKind,
    card_payload,
    check_card_budget,
    decode_record,
    links_payload,
    make_card,
    metadata_json,
    parse_metadata_json,
    sign_record,
    thaw_metadata,
    validate_metadata,
    worst_case_card_size,
)

PRIVATE, PUBLIC = key_pair(1)
OTHER_PRIVATE, OTHER_PUBLIC = key_pair(2)

#: The reasons a tampered or garbled record may be rejected under.
REJECTION_REASONS = {"malformed", "bad_signature", "oversized"}


def a_card_record(counter: int = 7, expiry: int = 1_900_000_000) -> Record:
    """A typical card with some nested metadata."""
    card = make_card(
        "pi-kitchen-01",
        "Linux",
        "0.1.0",
        {"room": "kitchen", "floor": 1, "sensors": ["temp", "co2"], "calib": {"k": 1.5}},
    )
    return sign_record(PRIVATE, PUBLIC, counter, expiry, card)


def a_links_record(counter: int = 8, expiry: int = 1_900_000_000) -> Record:
    """A links record with one connection of every type, some with a distance."""
    entries = tuple(
        LinkEntry(bytes([i]) * 8, kind, None if i % 2 else 10 * i)
        for i, kind in enumerate(ConnectionType, start=1)
    )
    return sign_record(PRIVATE, PUBLIC, counter, expiry, Links(entries))


def rejection(raw: bytes) -> RecordError:
    """Decode bytes that must be rejected; return the RecordError (fail on anything else)."""
    with pytest.raises(RecordError) as info:
        decode_record(raw)
    return info.value


def saturated(links: Links) -> Links:
    """What a links record decodes to: distances cut to the uint16 maximum."""
    return Links(
        tuple(
            LinkEntry(
                e.peer_id,
                e.connection_type,
                None if e.distance_dm is None else min(e.distance_dm, MAX_DISTANCE_DM),
            )
            for e in links.entries
        )
    )


# ================================================================ round trip


@THOROUGH
@given(private=private_keys, counter=uint32s, expiry=uint32s, card=cards)
def test_a_signed_card_decodes_to_the_fields_it_was_signed_with(
    private: Any, counter: int, expiry: int, card: Card
) -> None:
    public = raw_public_key(private)
    record = sign_record(private, public, counter, expiry, card)

    decoded = decode_record(record.raw)

    assert decoded.kind is RecordKind.CARD
    assert decoded.public_key == public
    assert (decoded.counter, decoded.expiry) == (counter, expiry)
    assert decoded.body == card
    assert decoded == record


@THOROUGH
@given(card=cards)
def test_card_metadata_comes_back_with_the_same_json_types(card: Card) -> None:
    # 1, 1.0 and True compare equal in Python; the JSON text tells them apart.
    decoded = decode_record(sign_record(PRIVATE, PUBLIC, 1, 2, card).raw)

    assert isinstance(decoded.body, Card)
    assert metadata_json(decoded.body.metadata) == metadata_json(card.metadata)


@QUICK
@given(name=st.text(min_size=1, max_size=200))
def test_unicode_device_names_survive_cut_to_their_byte_limit(name: str) -> None:
    card = make_card(name, "Linux", "0.1.0", {})

    decoded = decode_record(sign_record(PRIVATE, PUBLIC, 1, 2, card).raw)

    assert isinstance(decoded.body, Card)
    assert decoded.body.device_name == card.device_name
    assert len(card.device_name.encode("utf-8")) <= MAX_DEVICE_NAME_BYTES
    assert name.startswith(card.device_name)


@THOROUGH
@given(private=private_keys, counter=uint32s, expiry=uint32s, links=links_bodies)
def test_a_signed_links_record_decodes_to_its_connections(
    private: Any, counter: int, expiry: int, links: Links
) -> None:
    public = raw_public_key(private)
    record = sign_record(private, public, counter, expiry, links)

    decoded = decode_record(record.raw)

    assert decoded.kind is RecordKind.LINKS
    assert decoded.public_key == public
    assert (decoded.counter, decoded.expiry) == (counter, expiry)
    assert decoded.body == saturated(links)


@pytest.mark.parametrize("connection_type", list(ConnectionType))
@pytest.mark.parametrize("distance_dm", [None, 0, 1, 12345, MAX_DISTANCE_DM])
def test_every_connection_type_round_trips_with_and_without_distance(
    connection_type: ConnectionType, distance_dm: int | None
) -> None:
    links = Links((LinkEntry(b"\x01" * 8, connection_type, distance_dm),))

    decoded = decode_record(sign_record(PRIVATE, PUBLIC, 1, 2, links).raw)

    assert decoded.body == links


@pytest.mark.parametrize("distance_dm", [MAX_DISTANCE_DM + 1, 100_000, 10**9])
def test_distances_above_6553_5_metres_saturate(distance_dm: int) -> None:
    links = Links((LinkEntry(b"\x01" * 8, ConnectionType.RADIO, distance_dm),))

    decoded = decode_record(sign_record(PRIVATE, PUBLIC, 1, 2, links).raw)

    assert isinstance(decoded.body, Links)
    assert decoded.body.entries[0].distance_dm == MAX_DISTANCE_DM


def test_an_empty_links_record_round_trips() -> None:
    decoded = decode_record(sign_record(PRIVATE, PUBLIC, 1, 2, Links(())).raw)

    assert decoded.body == Links(())


def test_a_links_record_holds_at_most_64_connections() -> None:
    full = Links(tuple(LinkEntry(bytes([i]) * 8, ConnectionType.BLUETOOTH) for i in range(64)))
    assert decode_record(sign_record(PRIVATE, PUBLIC, 1, 2, full).raw).body == full

    too_many = Links((*full.entries, LinkEntry(b"\xff" * 8, ConnectionType.BLUETOOTH)))
    with pytest.raises(ValueError, match="64"):
        sign_record(PRIVATE, PUBLIC, 1, 2, too_many)


@pytest.mark.parametrize("counter", [-1, MAX_COUNTER + 1])
def test_sign_record_refuses_a_counter_outside_uint32(counter: int) -> None:
    with pytest.raises(ValueError, match="counter"):
        sign_record(PRIVATE, PUBLIC, counter, 2, make_card("pi", "Linux", "0.1.0", {}))


@pytest.mark.parametrize("expiry", [-1, MAX_COUNTER + 1])
def test_sign_record_refuses_an_expiry_outside_uint32(expiry: int) -> None:
    with pytest.raises(ValueError, match="expiry"):
        sign_record(PRIVATE, PUBLIC, 1, expiry, make_card("pi", "Linux", "0.1.0", {}))


# ================================================================ determinism


@QUICK
@given(counter=uint32s, expiry=uint32s, body=bodies)
def test_signing_the_same_inputs_twice_gives_identical_bytes(
    counter: int, expiry: int, body: Card | Links
) -> None:
    first = sign_record(PRIVATE, PUBLIC, counter, expiry, body)
    second = sign_record(PRIVATE, PUBLIC, counter, expiry, body)

    assert first.raw == second.raw


@THOROUGH
@given(metadata=metadata_objects)
def test_metadata_key_insertion_order_does_not_change_the_bytes(metadata: dict[str, Any]) -> None:
    forwards = make_card("pi", "Linux", "0.1.0", metadata)
    backwards = make_card("pi", "Linux", "0.1.0", reorder_keys(metadata))

    assert (
        sign_record(PRIVATE, PUBLIC, 1, 2, forwards).raw == sign_record(PRIVATE, PUBLIC, 1, 2, backwards).raw
    )


@THOROUGH
@given(counter=uint32s, expiry=uint32s, body=bodies)
def test_payload_and_record_are_already_in_canonical_cbor(
    counter: int, expiry: int, body: Card | Links
) -> None:
    raw = sign_record(PRIVATE, PUBLIC, counter, expiry, body).raw
    payload, _ = cose.open_envelope(raw)

    assert cbor2.dumps(cbor2.loads(payload), canonical=True) == payload
    assert cbor2.dumps(cbor2.loads(raw), canonical=True) == raw


@QUICK
@given(counter=uint32s, expiry=uint32s, body=bodies, private=private_keys)
def test_whatever_decodes_re_signs_to_the_very_same_bytes(
    counter: int, expiry: int, body: Card | Links, private: Any
) -> None:
    public = raw_public_key(private)
    decoded = decode_record(sign_record(private, public, counter, expiry, body).raw)

    again = sign_record(private, public, decoded.counter, decoded.expiry, decoded.body)

    assert again.raw == decoded.raw


# ================================================================ tampering


EXAMPLE_RECORDS = {"card": a_card_record(), "links": a_links_record()}


@pytest.mark.parametrize("name", sorted(EXAMPLE_RECORDS))
def test_flipping_any_single_bit_is_rejected(name: str) -> None:
    raw = EXAMPLE_RECORDS[name].raw
    accepted, wrong_reason = [], []
    for bit in range(len(raw) * 8):
        mutated = bytearray(raw)
        mutated[bit // 8] ^= 1 << (bit % 8)
        try:
            decode_record(bytes(mutated))
        except RecordError as exc:
            if exc.reason not in REJECTION_REASONS:
                wrong_reason.append((bit, exc.reason))
        else:
            accepted.append(bit)

    assert accepted == []
    assert wrong_reason == []


@pytest.mark.parametrize("name", sorted(EXAMPLE_RECORDS))
def test_truncating_at_any_length_is_rejected_as_malformed(name: str) -> None:
    raw = EXAMPLE_RECORDS[name].raw
    reasons = set()
    for length in range(len(raw)):
        reasons.add(rejection(raw[:length]).reason)

    assert reasons == {"malformed"}


@QUICK
@given(trailer=st.binary(min_size=1, max_size=64))
def test_trailing_bytes_after_a_record_are_rejected_as_malformed(trailer: bytes) -> None:
    assert rejection(EXAMPLE_RECORDS["card"].raw + trailer).reason == "malformed"


def test_trailing_bytes_that_push_a_record_past_4096_are_rejected_as_oversized() -> None:
    raw = EXAMPLE_RECORDS["links"].raw
    padded = raw + b"\x00" * (MAX_RECORD_BYTES + 1 - len(raw))

    assert rejection(padded).reason == "oversized"


@pytest.mark.parametrize("name", sorted(EXAMPLE_RECORDS))
def test_a_payload_re_signed_by_another_key_is_a_bad_signature(name: str) -> None:
    payload, _ = cose.open_envelope(EXAMPLE_RECORDS[name].raw)

    forged = cose.sign(OTHER_PRIVATE, payload)  # payload still names PUBLIC

    assert rejection(forged).reason == "bad_signature"


def test_stripping_the_metadata_of_a_signed_card_is_a_bad_signature() -> None:
    original = EXAMPLE_RECORDS["card"]
    assert isinstance(original.body, Card)
    _, signature = cose.open_envelope(original.raw)
    stripped_card = Card(original.body.device_name, original.body.os, original.body.agent_version, {})
    stripped = card_payload(PUBLIC, original.counter, original.expiry, stripped_card)

    assert rejection(cose.envelope(stripped, signature)).reason == "bad_signature"


def test_replaying_a_signature_with_a_higher_counter_is_a_bad_signature() -> None:
    original = EXAMPLE_RECORDS["links"]
    assert isinstance(original.body, Links)
    _, signature = cose.open_envelope(original.raw)
    bumped = links_payload(PUBLIC, original.counter + 1, original.expiry, original.body)

    assert rejection(cose.envelope(bumped, signature)).reason == "bad_signature"


def test_a_links_signature_does_not_verify_a_card_of_the_same_peer() -> None:
    card_payload_bytes, _ = cose.open_envelope(EXAMPLE_RECORDS["card"].raw)
    _, links_signature = cose.open_envelope(EXAMPLE_RECORDS["links"].raw)

    assert rejection(cose.envelope(card_payload_bytes, links_signature)).reason == "bad_signature"


@THOROUGH
@given(data=st.binary(max_size=MAX_RECORD_BYTES + 64))
def test_arbitrary_bytes_are_rejected_with_a_record_error_only(data: bytes) -> None:
    assert rejection(data).reason in REJECTION_REASONS


@THOROUGH
@given(data=st.data(), name=st.sampled_from(sorted(EXAMPLE_RECORDS)))
def test_arbitrary_multi_byte_corruption_is_rejected(data: st.DataObject, name: str) -> None:
    raw = EXAMPLE_RECORDS[name].raw
    positions = data.draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=8, unique=True))
    mutated = bytearray(raw)
    for position in positions:
        mutated[position] ^= data.draw(st.integers(1, 255))

    assert rejection(bytes(mutated)).reason in REJECTION_REASONS


cbor_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**65), 2**65),
        st.floats(),
        st.text(max_size=8),
        st.binary(max_size=12),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=4), st.integers(-3, 3)), children, max_size=3),
        st.builds(cbor2.CBORTag, st.sampled_from([1, 2, 24, 258, 1234]), children),
    ),
    max_leaves=12,
)


@THOROUGH
@given(
    kind=st.sampled_from([0, 1, 2, 3]),
    counter=st.one_of(uint32s, st.integers(-5, 2**40)),
    rest=st.lists(cbor_values, max_size=6),
    canonical=st.booleans(),
)
def test_validly_signed_garbage_payloads_are_rejected_or_decode_canonically(
    kind: int, counter: int, rest: list[Any], canonical: bool
) -> None:
    try:
        payload = cbor2.dumps([kind, PUBLIC, counter, 1, *rest], canonical=canonical)
    except (cbor2.CBOREncodeError, ValueError, TypeError):
        return  # hypothesis built something cbor2 itself cannot encode
    raw = cose.sign(PRIVATE, payload)

    try:
        decoded = decode_record(raw)
    except RecordError as exc:
        assert exc.reason in REJECTION_REASONS
    else:
        # Anything accepted must be exactly what the encoder would have produced.
        assert sign_record(PRIVATE, PUBLIC, decoded.counter, decoded.expiry, decoded.body).raw == raw


def test_a_self_referencing_payload_is_rejected_as_malformed() -> None:
    fields: list[Any] = [1, PUBLIC, 1, 2]
    fields.append(fields)
    payload = cbor2.dumps(fields, value_sharing=True)  # d81c 85 ... d81d00

    assert rejection(cose.envelope(payload, b"\x00" * 64)).reason == "malformed"


def keys_nested_as_keys(depth: int) -> bytes:
    """Metadata ``{{{...{0: 0}...: 0}: 0}``: maps nested ``depth`` deep as map keys (CBOR by hand:
    cbor2 itself takes time exponential in the depth to encode it)."""
    return b"\xa1" * depth + b"\x00" + b"\x00" * depth


def shared_doubling(depth: int) -> bytes:
    """``[x0, x1, ...]`` where x0 = [0] and each x(i) = [x(i-1), x(i-1)], by value-sharing tags:
    a few bytes a level, a tree of 2**depth leaves once unfolded."""
    items = [b"\xd8\x1c\x81\x00"]  # 28([0])
    for i in range(1, depth):
        ref = cbor2.dumps(cbor2.CBORTag(29, i - 1))
        items.append(b"\xd8\x1c\x82" + ref + ref)
    assert depth < 24  # a one-byte array head
    return bytes([0x80 + depth]) + b"".join(items)


def card_with_metadata_bytes(metadata: bytes) -> bytes:
    head = b"".join(cbor2.dumps(v) for v in (1, PUBLIC, 1, 1_900_000_000, "pi", "Linux", "0.1.0"))
    return b"\x88" + head + metadata


@pytest.mark.timeout(10, method="thread")  # a regression hangs in C code, past signals
@pytest.mark.parametrize(
    "metadata",
    [keys_nested_as_keys(40), b"\xa1\x61a" + shared_doubling(23), b"\xa1\xa1\x61a\x00\x00"],
    ids=["maps-as-keys-40-deep", "shared-values-doubling-23-times", "a-map-as-key"],
)
def test_a_payload_that_would_re_encode_exponentially_is_malformed_at_once(metadata: bytes) -> None:
    # Found by the record_payload fuzz target (tests/fuzz): a 60-byte payload of maps nested as
    # map keys took hours in the deterministic re-encode, before any signature check, so one
    # HELLO or RECORDS entry froze an agent; value-sharing tags did the same with memory.
    payload = card_with_metadata_bytes(metadata)
    assert len(payload) < 300

    for raw in (cose.sign(PRIVATE, payload), cose.envelope(payload, b"\x00" * 64)):  # signed or forged
        assert rejection(raw).reason == "malformed"


def test_records_under_a_small_order_public_key_are_rejected() -> None:
    identity_point = b"\x01" + b"\x00" * 31
    payload = card_payload(identity_point, 1, MAX_COUNTER, make_card("forged", "Linux", "0", {}))
    signature = identity_point + b"\x00" * 32

    rejection(cose.envelope(payload, signature))


# ================================================================ non-canonical encodings

CANONICAL_PIECES: dict[str, bytes] = {
    "head": b"\x88",
    "kind": b"\x01",
    "key": b"\x58\x20" + PUBLIC,
    "counter": b"\x05",
    "expiry": b"\x0a",
    "name": b"\x62pi",
    "os": b"\x65Linux",
    "version": b"\x650.1.0",
    "metadata": b"\xa0",
    "tail": b"",
}


def hand_built_card(**pieces: bytes) -> bytes:
    """Card payload bytes assembled piece by piece; override any piece to break it."""
    return b"".join({**CANONICAL_PIECES, **pieces}.values())


def test_the_hand_built_card_payload_is_the_canonical_one() -> None:
    expected = card_payload(PUBLIC, 5, 10, make_card("pi", "Linux", "0.1.0", {}))

    assert hand_built_card() == expected
    assert decode_record(cose.sign(PRIVATE, hand_built_card())).counter == 5


NON_CANONICAL_CARDS = {
    "counter in 2 bytes": {"counter": b"\x18\x05"},
    "counter in 3 bytes": {"counter": b"\x19\x00\x05"},
    "counter in 5 bytes": {"counter": b"\x1a\x00\x00\x00\x05"},
    "counter in 9 bytes": {"counter": b"\x1b" + (5).to_bytes(8, "big")},
    "counter as bignum tag": {"counter": b"\xc2\x41\x05"},
    "counter as float": {"counter": b"\xf9\x45\x00"},
    "kind in 2 bytes": {"kind": b"\x18\x01"},
    "array length in 2 bytes": {"head": b"\x98\x08"},
    "indefinite array": {"head": b"\x9f", "tail": b"\xff"},
    "key length in 3 bytes": {"key": b"\x59\x00\x20" + PUBLIC},
    "key as indefinite bytes": {"key": b"\x5f\x50" + PUBLIC[:16] + b"\x50" + PUBLIC[16:] + b"\xff"},
    "name length in 2 bytes": {"name": b"\x78\x02pi"},
    "name as indefinite text": {"name": b"\x7f\x62pi\xff"},
    "map keys unsorted": {"metadata": b"\xa2\x61b\x01\x61a\x02"},
    "map keys unsorted by length": {"metadata": b"\xa2\x62aa\x01\x61b\x02"},
    "duplicate map keys": {"metadata": b"\xa2\x61a\x01\x61a\x02"},
    "map length in 2 bytes": {"metadata": b"\xb8\x00"},
    "indefinite map": {"metadata": b"\xbf\xff"},
    "float wider than needed": {"metadata": b"\xa1\x61a\xfb" + struct.pack(">d", 1.5)},
    "nested int not minimal": {"metadata": b"\xa1\x61a\x19\x00\x01"},
}


@pytest.mark.parametrize("pieces", NON_CANONICAL_CARDS.values(), ids=NON_CANONICAL_CARDS.keys())
def test_a_validly_signed_non_canonical_payload_is_malformed(pieces: dict[str, bytes]) -> None:
    payload = hand_built_card(**pieces)
    assert cbor2.loads(payload)  # still well-formed CBOR, just not deterministic

    assert rejection(cose.sign(PRIVATE, payload)).reason == "malformed"


STRUCTURALLY_INVALID = {
    "unknown kind 3": [3, PUBLIC, 1, 2, []],
    "kind 0": [0, PUBLIC, 1, 2, []],
    "kind as bool": [True, PUBLIC, 1, 2, []],
    "short public key": [2, PUBLIC[:31], 1, 2, []],
    "public key as text": [2, "x" * 32, 1, 2, []],
    "counter beyond uint32": [2, PUBLIC, MAX_COUNTER + 1, 2, []],
    "negative counter": [2, PUBLIC, -1, 2, []],
    "expiry beyond uint32": [2, PUBLIC, 1, MAX_COUNTER + 1, []],
    "too few fields": [2, PUBLIC, 1],
    "payload not an array": {"kind": 2},
    "links with extra field": [2, PUBLIC, 1, 2, [], []],
    "links entries not an array": [2, PUBLIC, 1, 2, b"\x00" * 9],
    "connection too short": [2, PUBLIC, 1, 2, [b"\x00" * 8]],
    "connection 10 bytes": [2, PUBLIC, 1, 2, [b"\x00" * 8 + b"\x01\x00"]],
    "connection too long": [2, PUBLIC, 1, 2, [b"\x00" * 8 + b"\x01\x00\x00\x00"]],
    "connection type code 0": [2, PUBLIC, 1, 2, [b"\x00" * 8 + b"\x00"]],
    "connection type code 6": [2, PUBLIC, 1, 2, [b"\x00" * 8 + b"\x06"]],
    "connection as array": [2, PUBLIC, 1, 2, [[b"\x00" * 8, 1]]],
    "65 connections": [2, PUBLIC, 1, 2, [bytes([i]) * 8 + b"\x01" for i in range(65)]],
    "card with 7 fields": [1, PUBLIC, 1, 2, "pi", "Linux", "0.1.0"],
    "card with 9 fields": [1, PUBLIC, 1, 2, "pi", "Linux", "0.1.0", {}, {}],
    "card metadata as array": [1, PUBLIC, 1, 2, "pi", "Linux", "0.1.0", []],
    "card metadata null": [1, PUBLIC, 1, 2, "pi", "Linux", "0.1.0", None],
    "metadata int key": [1, PUBLIC, 1, 2, "pi", "Linux", "0.1.0", {1: 1}],
    "metadata bytes value": [1, PUBLIC, 1, 2, "pi", "Linux", "0.1.0", {"a": b"\x00"}],
    "metadata tagged value": [1, PUBLIC, 1, 2, "pi", "L", "0", {"a": cbor2.CBORTag(1234, 1)}],
    "metadata undefined": [1, PUBLIC, 1, 2, "pi", "Linux", "0.1.0", {"a": cbor2.undefined}],
    "metadata NaN": [1, PUBLIC, 1, 2, "pi", "Linux", "0.1.0", {"a": math.nan}],
    "metadata Infinity": [1, PUBLIC, 1, 2, "pi", "Linux", "0.1.0", {"a": math.inf}],
    "metadata int beyond 64 bits": [1, PUBLIC, 1, 2, "pi", "L", "0", {"a": -(2**64)}],
    "device name too long": [1, PUBLIC, 1, 2, "x" * 65, "Linux", "0.1.0", {}],
    "os too long": [1, PUBLIC, 1, 2, "pi", "x" * 33, "0.1.0", {}],
    "version too long": [1, PUBLIC, 1, 2, "pi", "Linux", "x" * 17, {}],
    "device name as bytes": [1, PUBLIC, 1, 2, b"pi", "Linux", "0.1.0", {}],
}


@pytest.mark.parametrize("fields", STRUCTURALLY_INVALID.values(), ids=STRUCTURALLY_INVALID.keys())
def test_a_validly_signed_payload_that_is_not_a_record_is_malformed(fields: Any) -> None:
    payload = cbor2.dumps(fields, canonical=True)

    assert rejection(cose.sign(PRIVATE, payload)).reason == "malformed"


def test_metadata_nested_too_deep_inside_a_signed_card_is_malformed() -> None:
    deep: Any = 1
    for _ in range(MAX_METADATA_DEPTH + 1):
        deep = {"a": deep}
    payload = cbor2.dumps([1, PUBLIC, 1, 2, "pi", "Linux", "0.1.0", deep], canonical=True)

    assert rejection(cose.sign(PRIVATE, payload)).reason == "malformed"


def cose_sign1(
    protected: bytes, unprotected: bytes = b"\xa0", tag: bytes = b"\xd2", payload: bytes = b""
) -> bytes:
    """A COSE_Sign1 with these headers, correctly signed over its own Sig_structure."""
    payload = payload or cose.open_envelope(EXAMPLE_RECORDS["card"].raw)[0]
    to_sign = cbor2.dumps(["Signature1", protected, b"", payload])
    signature = PRIVATE.sign(to_sign)
    return (
        tag + b"\x84" + cbor2.dumps(protected) + unprotected + cbor2.dumps(payload) + cbor2.dumps(signature)
    )


def test_the_hand_built_cose_sign1_matches_ours() -> None:
    assert cose_sign1(cose.PROTECTED_HEADER) == EXAMPLE_RECORDS["card"].raw


COSE_VARIANTS = {
    "alg ES256": {"protected": cbor2.dumps({1: -7})},
    "alg EdDSA with a kid": {"protected": cbor2.dumps({1: -8, 4: b"kid"})},
    "alg as text": {"protected": cbor2.dumps({1: "EdDSA"})},
    "empty protected": {"protected": b""},
    "unprotected kid": {"unprotected": cbor2.dumps({4: b"kid"})},
    "unprotected alg": {"unprotected": cbor2.dumps({1: -8})},
    "unprotected null": {"unprotected": b"\xf6"},
    "untagged": {"tag": b""},
    "tag 17 (COSE_Mac0)": {"tag": b"\xd1"},
    "tag 98 (COSE_Sign)": {"tag": b"\xd8\x62"},
    "tag 18 in 2 bytes": {"tag": b"\xd8\x12"},
    "tagged twice": {"tag": b"\xd2\xd2"},
    "self-described CBOR tag first": {"tag": b"\xd9\xd9\xf7\xd2"},
}


@pytest.mark.parametrize("variant", COSE_VARIANTS.values(), ids=COSE_VARIANTS.keys())
def test_any_other_cose_envelope_is_malformed(variant: dict[str, bytes]) -> None:
    options = {"protected": cose.PROTECTED_HEADER, **variant}

    assert rejection(cose_sign1(**options)).reason == "malformed"


def test_a_sign1_array_of_the_wrong_length_is_malformed() -> None:
    payload, signature = cose.open_envelope(EXAMPLE_RECORDS["card"].raw)
    three = cbor2.dumps(cbor2.CBORTag(18, [cose.PROTECTED_HEADER, {}, payload]))
    five = cbor2.dumps(cbor2.CBORTag(18, [cose.PROTECTED_HEADER, {}, payload, signature, b""]))

    assert rejection(three).reason == "malformed"
    assert rejection(five).reason == "malformed"


@pytest.mark.parametrize("length", [0, 63, 65])
def test_a_signature_that_is_not_64_bytes_is_malformed(length: int) -> None:
    payload, _ = cose.open_envelope(EXAMPLE_RECORDS["card"].raw)

    assert rejection(cose.envelope(payload, b"\x01" * length)).reason == "malformed"


def test_a_detached_payload_is_malformed() -> None:
    _, signature = cose.open_envelope(EXAMPLE_RECORDS["card"].raw)
    detached = b"\xd2\x84\x43\xa1\x01\x27\xa0\xf6" + cbor2.dumps(signature)

    assert rejection(detached).reason == "malformed"


def test_a_validly_signed_record_over_4096_bytes_is_oversized() -> None:
    big = Card("pi", "Linux", "0.1.0", {"blob": "x" * MAX_RECORD_BYTES})
    raw = cose.sign(PRIVATE, card_payload(PUBLIC, 1, 2, big))
    assert len(raw) > MAX_RECORD_BYTES

    assert rejection(raw).reason == "oversized"


@pytest.mark.parametrize("size", [MAX_RECORD_BYTES + 1, 65536])
def test_any_input_over_4096_bytes_is_oversized_before_parsing(size: int) -> None:
    assert rejection(b"\xd2" * size).reason == "oversized"


def test_sign_record_refuses_to_produce_a_record_over_4096_bytes() -> None:
    big = Card("pi", "Linux", "0.1.0", {"blob": "x" * MAX_RECORD_BYTES})

    with pytest.raises(RecordError) as info:
        sign_record(PRIVATE, PUBLIC, 1, 2, big)

    assert info.value.reason == "oversized"
    assert str(len(cose.sign(PRIVATE, card_payload(PUBLIC, 1, 2, big)))) in str(info.value)


# ================================================================ COSE conformance


def pycose_message(raw: bytes, public_key: bytes) -> Sign1Message:
    """Parse our record with pycose (after converting cbor2 6's immutable containers)."""
    tagged = cbor2.loads(raw)
    assert tagged.tag == 18
    v = tagged.value
    message = Sign1Message.from_cose_obj([v[0], dict(v[1]), v[2], v[3]], True)
    message.key = OKPKey(crv="Ed25519", x=public_key)
    return message


@pytest.mark.parametrize("name", sorted(EXAMPLE_RECORDS))
def test_pycose_verifies_our_records(name: str) -> None:
    record = EXAMPLE_RECORDS[name]

    message = pycose_message(record.raw, record.public_key)

    assert message.verify_signature()
    assert message.payload == cose.open_envelope(record.raw)[0]


@QUICK
@given(private=private_keys, counter=uint32s, expiry=uint32s, body=bodies)
def test_pycose_verifies_any_record_we_sign(
    private: Any, counter: int, expiry: int, body: Card | Links
) -> None:
    public = raw_public_key(private)
    record = sign_record(private, public, counter, expiry, body)

    assert pycose_message(record.raw, public).verify_signature()


@pytest.mark.parametrize("name", sorted(EXAMPLE_RECORDS))
def test_pycose_rejects_a_tampered_record(name: str) -> None:
    record = EXAMPLE_RECORDS[name]
    payload, signature = cose.open_envelope(record.raw)
    tampered_payload = bytearray(payload)
    tampered_payload[-1] ^= 0x01
    tampered_signature = bytearray(signature)
    tampered_signature[0] ^= 0x01

    for raw in (
        cose.envelope(bytes(tampered_payload), signature),
        cose.envelope(payload, bytes(tampered_signature)),
    ):
        assert not pycose_message(raw, record.public_key).verify_signature()


def test_pycose_rejects_a_record_checked_against_another_peers_key() -> None:
    record = EXAMPLE_RECORDS["card"]

    assert not pycose_message(record.raw, OTHER_PUBLIC).verify_signature()


@pytest.mark.parametrize("name", sorted(EXAMPLE_RECORDS))
def test_the_signature_is_ed25519_over_the_rfc9052_sig_structure(name: str) -> None:
    record = EXAMPLE_RECORDS[name]
    protected, unprotected, payload, signature = cbor2.loads(record.raw).value
    sig_structure = cbor2.dumps(["Signature1", protected, b"", payload])

    assert protected == cbor2.dumps({1: -8})  # alg: EdDSA
    assert unprotected == {}
    assert cose.sig_structure(payload) == sig_structure
    Ed25519PublicKey.from_public_bytes(record.public_key).verify(signature, sig_structure)
    with pytest.raises(InvalidSignature):
        Ed25519PublicKey.from_public_bytes(OTHER_PUBLIC).verify(signature, sig_structure)


@QUICK
@given(payload=st.binary(max_size=70_000))
def test_sig_structure_matches_cbor2_for_any_payload_length(payload: bytes) -> None:
    assert cose.sig_structure(payload) == cbor2.dumps(["Signature1", cose.PROTECTED_HEADER, b"", payload])


@pytest.mark.parametrize("length", [0, 23, 24, 255, 256, 65535, 65536])
def test_envelope_matches_cbor2_at_every_length_boundary(length: int) -> None:
    payload = b"\x07" * length
    signature = b"\x09" * 64
    expected = cbor2.dumps(cbor2.CBORTag(18, [cose.PROTECTED_HEADER, {}, payload, signature]))

    assert cose.envelope(payload, signature) == expected
    assert cose.envelope_overhead(length) == len(expected) - length


# ================================================================ budgets


def test_a_card_without_metadata_fits_in_160_bytes_at_the_widest_counter_and_expiry() -> None:
    card = make_card("pi-kitchen-01", "Linux", "0.1.0", {})

    record = sign_record(PRIVATE, PUBLIC, MAX_COUNTER, MAX_COUNTER, card)

    assert len(record.raw) <= 160
    assert worst_case_card_size(PUBLIC, card) == len(record.raw)


def test_a_links_record_with_eight_measured_connections_fits_in_233_bytes() -> None:
    links = Links(tuple(LinkEntry(bytes([i]) * 8, ConnectionType.RADIO, MAX_DISTANCE_DM) for i in range(8)))

    record = sign_record(PRIVATE, PUBLIC, MAX_COUNTER, MAX_COUNTER, links)

    assert len(record.raw) <= 233


@QUICK
@given(
    entries=st.lists(
        st.builds(LinkEntry, peer_ids, connection_types, distances_dm),
        max_size=MAX_CONNECTIONS_PER_RECORD,
    )
)
def test_links_records_stay_far_inside_the_4096_byte_budget(entries: list[LinkEntry]) -> None:
    record = sign_record(PRIVATE, PUBLIC, MAX_COUNTER, MAX_COUNTER, Links(tuple(entries)))

    assert len(record.raw) <= 1024


# ---------------------------------------------------------------- metadata validation


@pytest.mark.parametrize("value", [[], [1, 2], "text", 1, 1.5, None, True], ids=repr)
def test_metadata_must_be_an_object(value: Any) -> None:
    with pytest.raises(MetadataError, match="object"):
        validate_metadata(value)


@pytest.mark.parametrize("text", ["[]", "1", '"x"', "null", "true"])
def test_metadata_json_must_be_an_object(text: str) -> None:
    with pytest.raises(MetadataError, match="object"):
        parse_metadata_json(text)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=repr)
def test_metadata_refuses_nan_and_infinity(value: float) -> None:
    with pytest.raises(MetadataError, match="NaN or Infinity"):
        validate_metadata({"reading": [1, {"x": value}]})


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity"])
def test_metadata_json_refuses_nan_and_infinity(text: str) -> None:
    with pytest.raises(MetadataError):
        parse_metadata_json(f'{{"reading": {text}}}')


@pytest.mark.parametrize("key", [1, None, 1.5, ("a",), b"a", True], ids=repr)
def test_metadata_keys_must_be_strings(key: Any) -> None:
    with pytest.raises(MetadataError, match="keys must be strings"):
        validate_metadata({"outer": {key: 1}})


@pytest.mark.parametrize(
    "value",
    [b"bytes", {1, 2}, object(), 2**64, -(2**63) - 1],
    ids=["bytes", "set", "object", "2**64", "below-int64"],
)
def test_metadata_values_must_be_json_data(value: Any) -> None:
    with pytest.raises(MetadataError):
        validate_metadata({"a": value})


def nested(levels: int, leaf: Any = 1) -> dict[str, Any]:
    """A leaf value inside ``levels`` nested objects."""
    value: Any = leaf
    for _ in range(levels):
        value = {"a": value}
    return dict(value)


def test_metadata_nested_16_levels_deep_is_accepted() -> None:
    assert validate_metadata(nested(MAX_METADATA_DEPTH)) == nested(MAX_METADATA_DEPTH)


@pytest.mark.parametrize("levels", [MAX_METADATA_DEPTH + 1, 100, 5000])
def test_metadata_nested_deeper_than_16_levels_is_refused(levels: int) -> None:
    with pytest.raises(MetadataError, match="deeper than 16"):
        validate_metadata(nested(levels))


def test_metadata_json_nested_too_deep_is_refused() -> None:
    text = '{"a":' * (MAX_METADATA_DEPTH + 1) + "1" + "}" * (MAX_METADATA_DEPTH + 1)

    with pytest.raises(MetadataError, match="deeper than 16"):
        parse_metadata_json(text)


def test_metadata_json_nested_deeper_than_python_can_parse_is_refused() -> None:
    text = '{"a":' + "[" * 2000 + "]" * 2000 + "}"

    with pytest.raises(MetadataError):
        parse_metadata_json(text)


@pytest.mark.parametrize("text", ["", "{", "{'a': 1}", '{"a": 1,}', '{"a": undefined}'])
def test_invalid_metadata_json_is_refused(text: str) -> None:
    with pytest.raises(MetadataError, match="not valid JSON"):
        parse_metadata_json(text)


def object_with_json_size(size: int) -> dict[str, str]:
    """A metadata object whose compact JSON text is exactly ``size`` bytes."""
    value = {"a": "x" * (size - len('{"a":""}'))}
    assert len(metadata_json(value).encode()) == size
    return value


def test_metadata_json_of_exactly_4096_bytes_is_accepted() -> None:
    value = object_with_json_size(MAX_METADATA_JSON_BYTES)

    assert validate_metadata(value) == value
    assert parse_metadata_json(json.dumps(value, separators=(",", ":"))) == value


def test_metadata_json_text_over_4096_bytes_is_refused_with_size_and_limit() -> None:
    text = json.dumps(object_with_json_size(MAX_METADATA_JSON_BYTES + 1), separators=(",", ":"))

    with pytest.raises(MetadataTooLargeError) as info:
        parse_metadata_json(text)

    assert "4097" in str(info.value)
    assert "4096" in str(info.value)
    assert (info.value.size, info.value.limit) == (4097, 4096)


def test_metadata_json_size_counts_utf8_bytes_not_characters() -> None:
    text = '{"a":"' + "é" * 2046 + '"}'  # 2046 characters but 4092 + 8 bytes
    assert len(text) < MAX_METADATA_JSON_BYTES < len(text.encode())

    with pytest.raises(MetadataTooLargeError, match="4100 bytes"):
        parse_metadata_json(text)


def test_metadata_json_whitespace_counts_towards_the_limit() -> None:
    text = '{"a": 1' + " " * MAX_METADATA_JSON_BYTES + "}"

    with pytest.raises(MetadataTooLargeError, match=str(len(text))):
        parse_metadata_json(text)


def test_metadata_object_over_4096_bytes_of_json_is_refused_with_size_and_limit() -> None:
    with pytest.raises(MetadataTooLargeError) as info:
        validate_metadata(object_with_json_size(5000))

    assert "5000" in str(info.value)
    assert "4096" in str(info.value)


def test_metadata_errors_are_value_errors() -> None:
    with pytest.raises(ValueError):
        validate_metadata([])
    with pytest.raises(ValueError):
        parse_metadata_json("x" * 5000)


@pytest.mark.parametrize("how", ["object", "json text"])
def test_metadata_with_a_lone_surrogate_is_refused_as_metadata_error(how: str) -> None:
    with pytest.raises(MetadataError):
        if how == "object":
            validate_metadata({"a": "\ud800"})
        else:
            parse_metadata_json('{"a": "\\ud800"}')


@THOROUGH
@given(metadata=metadata_objects)
def test_valid_metadata_is_returned_read_only_and_equal(metadata: dict[str, Any]) -> None:
    frozen = validate_metadata(metadata)

    assert thaw_metadata(frozen) == metadata
    with pytest.raises(TypeError):
        frozen["new"] = 1  # type: ignore[index]


@QUICK
@given(value=json_values)
def test_parsed_json_metadata_equals_the_object_it_came_from(value: Any) -> None:
    metadata = {"v": value}

    assert parse_metadata_json(json.dumps(metadata)) == validate_metadata(metadata)


# ---------------------------------------------------------------- card budget


def card_with(metadata: dict[str, Any]) -> Card:
    return make_card("pi-kitchen-01", "Linux", "0.1.0", metadata)


def test_a_near_4096_byte_string_fits_the_json_limit_but_not_the_card() -> None:
    metadata = object_with_json_size(MAX_METADATA_JSON_BYTES)
    validate_metadata(metadata)  # fine as JSON...

    with pytest.raises(MetadataTooLargeError) as info:  # ...but the signed card is too big
        check_card_budget(PUBLIC, card_with(metadata))

    size = worst_case_card_size(PUBLIC, card_with(metadata))
    assert size > MAX_RECORD_BYTES
    assert str(size) in str(info.value)
    assert "4096" in str(info.value)


def test_many_short_floats_fit_the_json_limit_but_not_the_card() -> None:
    # "1.1," is 4 bytes of JSON but 9 bytes of CBOR (a float64).
    metadata = {"samples": [1.1] * 1000}
    validate_metadata(metadata)

    with pytest.raises(MetadataTooLargeError) as info:
        check_card_budget(PUBLIC, card_with(metadata))

    assert info.value.limit == MAX_RECORD_BYTES
    assert info.value.size == worst_case_card_size(PUBLIC, card_with(metadata))
    assert str(info.value.size) in str(info.value)


def largest_string_card() -> Card:
    """The card whose one metadata string makes it exactly 4096 bytes when signed."""
    for length in range(3800, 4096):
        card = card_with({"a": "x" * length})
        if worst_case_card_size(PUBLIC, card) == MAX_RECORD_BYTES:
            return card
    raise AssertionError("no string length gives a card of exactly 4096 bytes")


def test_a_card_of_exactly_4096_bytes_is_accepted_and_signs_and_decodes() -> None:
    card = largest_string_card()
    validate_metadata(card.metadata)

    check_card_budget(PUBLIC, card)
    record = sign_record(PRIVATE, PUBLIC, MAX_COUNTER, MAX_COUNTER, card)

    assert len(record.raw) == MAX_RECORD_BYTES
    assert decode_record(record.raw).body == card


def test_one_byte_more_than_the_largest_card_is_refused_naming_4097() -> None:
    card = largest_string_card()
    one_more = card_with({"a": card.metadata["a"] + "x"})

    with pytest.raises(MetadataTooLargeError, match="4097 bytes; the limit is 4096 bytes"):
        check_card_budget(PUBLIC, one_more)


@QUICK
@given(card=cards)
def test_cards_within_budget_always_sign_within_4096_bytes(card: Card) -> None:
    check_card_budget(PUBLIC, card)

    for counter in (0, MAX_COUNTER):
        assert len(sign_record(PRIVATE, PUBLIC, counter, counter, card).raw) <= MAX_RECORD_BYTES
