"""Specification of link frames and messages (agent.core.wire).

A frame never exceeds its link's MTU; a message too big for one frame is cut
into at most 255 fragments that reassemble to exactly the original bytes; a
message is a CBOR array starting with a known type, and anything else is a
:class:`WireError` (never another exception).
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.core.engine import Engine, LinkSpec
from agent.core.limits import (
    HANDSHAKE_CONTEXT,
    MAX_MESSAGE_BYTES,
    MIN_LINK_MTU,
    NONCE_BYTES,
    PROTOCOL_VERSION,
    SESSION_PROOF_CONTEXT,
)
from agent.core.records import ConnectionType, RecordKind, make_card
from agent.core.wire import (
    AFTER_HANDSHAKE,
    DIGEST_ENTRY_BYTES,
    FRAGMENT_HEADER_BYTES,
    FRAME_FRAGMENT,
    FRAME_WHOLE,
    MAX_FRAGMENTS,
    Accept,
    Capabilities,
    CardRequest,
    Deny,
    Digest,
    Hello,
    Message,
    MessageType,
    Proof,
    Records,
    Role,
    Summary,
    UnsupportedVersionError,
    WireError,
    decode_hello,
    decode_message,
    digest_entry,
    encode_hello,
    encode_message,
    frames_for,
    max_message_bytes,
    message_type,
    parse_fields,
    parse_message,
    proof_message,
    read_digest_entry,
)
from agent.state.store import MemoryCounter

NOW = 1_800_000_000.0
CODEC = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

mtus = st.integers(min_value=MIN_LINK_MTU, max_value=1500)


def reassemble(frames: list[bytes]) -> bytes:
    """Put one message back together by hand, checking every fragment header."""
    if frames[0][0] == FRAME_WHOLE:
        assert len(frames) == 1
        return frames[0][1:]
    msg_id = frames[0][1]
    count = len(frames)
    for index, frame in enumerate(frames):
        assert frame[:FRAGMENT_HEADER_BYTES] == bytes([FRAME_FRAGMENT, msg_id, index, count])
    return b"".join(frame[FRAGMENT_HEADER_BYTES:] for frame in frames)


# ---------------------------------------------------------------- frames


@CODEC
@given(mtu=mtus, data=st.data())
def test_a_message_that_fits_one_frame_goes_whole(mtu: int, data: st.DataObject) -> None:
    message = data.draw(st.binary(max_size=mtu - 1))
    assert frames_for(message, mtu, 7) == [bytes([FRAME_WHOLE]) + message]


@CODEC
@given(mtu=mtus, msg_id=st.integers(0, 255), data=st.data())
def test_a_fragmented_message_reassembles_to_the_same_bytes_within_the_mtu(
    mtu: int, msg_id: int, data: st.DataObject
) -> None:
    size = data.draw(st.integers(min_value=mtu, max_value=min(max_message_bytes(mtu), 30_000)))
    message = random.Random(data.draw(st.integers(0, 2**32))).randbytes(size)

    frames = frames_for(message, mtu, msg_id)

    assert 2 <= len(frames) <= MAX_FRAGMENTS
    assert all(len(frame) <= mtu for frame in frames)
    assert all(len(frame) == mtu for frame in frames[:-1])  # no frame is wasted
    assert len(frames) == -(-size // (mtu - FRAGMENT_HEADER_BYTES))
    assert {frame[1] for frame in frames} == {msg_id}
    assert reassemble(frames) == message


@pytest.mark.parametrize("mtu", [MIN_LINK_MTU, 255, 1400])
def test_the_whole_frame_boundary_is_exactly_the_mtu(mtu: int) -> None:
    fits = b"m" * (mtu - 1)
    assert frames_for(fits, mtu, 0) == [bytes([FRAME_WHOLE]) + fits]
    one_more = b"m" * mtu
    frames = frames_for(one_more, mtu, 0)
    assert [frame[0] for frame in frames] == [FRAME_FRAGMENT, FRAME_FRAGMENT]
    assert reassemble(frames) == one_more


@pytest.mark.parametrize(
    ("mtu", "expected"),
    [
        (MIN_LINK_MTU, MAX_FRAGMENTS * (MIN_LINK_MTU - FRAGMENT_HEADER_BYTES)),
        (255, MAX_FRAGMENTS * (255 - FRAGMENT_HEADER_BYTES)),
        (1400, MAX_MESSAGE_BYTES),
        (65_535, MAX_MESSAGE_BYTES),
    ],
)
def test_max_message_bytes_is_the_fragment_limit_capped_by_the_message_limit(mtu: int, expected: int) -> None:
    assert max_message_bytes(mtu) == expected


@pytest.mark.parametrize("mtu", [MIN_LINK_MTU, 100, 255, 261, 262, 1400])
def test_a_message_of_max_message_bytes_round_trips(mtu: int) -> None:
    message = random.Random(mtu).randbytes(max_message_bytes(mtu))
    frames = frames_for(message, mtu, 3)
    assert len(frames) <= MAX_FRAGMENTS
    assert all(len(frame) <= mtu for frame in frames)
    assert reassemble(frames) == message


@pytest.mark.parametrize("mtu", [MIN_LINK_MTU, 100, 255])
def test_a_message_needing_more_than_255_fragments_raises_wire_error(mtu: int) -> None:
    too_big = b"\x00" * (MAX_FRAGMENTS * (mtu - FRAGMENT_HEADER_BYTES) + 1)
    with pytest.raises(WireError, match=f"MTU {mtu}"):
        frames_for(too_big, mtu, 0)


@pytest.mark.parametrize("mtu", [MIN_LINK_MTU, 255, 1400])
def test_one_byte_over_max_message_bytes_cannot_cross_the_link(mtu: int) -> None:
    # Either it needs too many fragments, or the receiver refuses a message that big.
    over = b"\x00" * (max_message_bytes(mtu) + 1)
    try:
        frames = frames_for(over, mtu, 0)
    except WireError:
        return
    with pytest.raises(WireError, match="exceeds"):
        decode_message(reassemble(frames))


def test_a_hello_fragmented_at_the_minimum_mtu_is_reassembled_by_an_engine() -> None:
    engines = []
    for name in ("a", "b"):
        private_key = Ed25519PrivateKey.generate()
        engines.append(
            Engine(
                private_key=private_key,
                public_key=private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw),
                counters=MemoryCounter(),
                card=make_card(name, "linux", "0.1.0", {"note": "n" * 300}),
                now=NOW,
                rng=random.Random(name).randbytes,
            )
        )
    a, b = engines
    spec = LinkSpec(ConnectionType.BLUETOOTH, mtu=MIN_LINK_MTU)
    a.link_up("l", spec, NOW)
    b.link_up("l", spec, NOW)
    hello_frames = [frame for _, frame in b.datagrams_to_send(NOW)]
    assert len(hello_frames) > 10 and all(len(frame) <= MIN_LINK_MTU for frame in hello_frames)

    for frame in reversed(hello_frames):  # out of order, too
        a.receive("l", frame, NOW)

    sent = [frame for _, frame in a.datagrams_to_send(NOW)]
    kinds = []
    partial: list[bytes] = []
    for frame in sent:
        partial.append(frame)
        if frame[0] == FRAME_WHOLE or frame[2] == frame[3] - 1:
            kinds.append(decode_message(reassemble(partial))[0])
            partial = []
    assert kinds == [MessageType.HELLO, MessageType.PROOF]
    assert a.stats["messages.malformed"] == a.stats["frames.malformed"] == 0


# ---------------------------------------------------------------- messages


def test_message_type_numbers_never_change() -> None:
    assert {t.name: t.value for t in MessageType} == {
        "HELLO": 1,
        "PROOF": 2,
        "ACCEPT": 3,
        "DENY": 4,
        "RECORDS": 5,
        "SUMMARY": 6,
        "DIGEST": 7,
        "CARD_REQUEST": 8,
    }


cbor_fields = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**64), 2**64)
    | st.binary(max_size=64)
    | st.text(max_size=16)
    | st.floats(allow_nan=False),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)


@CODEC
@given(kind=st.sampled_from(MessageType), fields=st.lists(cbor_fields, max_size=5))
def test_every_message_round_trips(kind: MessageType, fields: list[Any]) -> None:
    decoded_kind, decoded_fields = decode_message(encode_message(kind, *fields))
    assert decoded_kind is kind
    assert list(decoded_fields) == fields


def test_encoding_is_deterministic_whatever_the_map_order() -> None:
    one = encode_message(MessageType.RECORDS, {"b": 1, "a": [1, 2]}, 1000)
    other = encode_message(MessageType.RECORDS, {"a": [1, 2], "b": 1}, 1000)
    assert one == other
    assert encode_message(MessageType.ACCEPT) == b"\x81\x03"


@pytest.mark.parametrize(
    "item",
    [3, "HELLO", b"\x01", {1: 2}, None, True, 1.0, cbor2.CBORTag(24, b"\x81\x03")],
    ids=repr,
)
def test_a_message_that_is_not_an_array_is_refused(item: Any) -> None:
    with pytest.raises(WireError, match="array"):
        decode_message(cbor2.dumps(item))


@pytest.mark.parametrize("first", [[], ["3"], [3.0], [True], [b"\x03"], [None], [[3]]], ids=repr)
def test_a_message_whose_first_item_is_not_an_integer_type_is_refused(first: list[Any]) -> None:
    with pytest.raises(WireError, match="array starting with its type"):
        decode_message(cbor2.dumps([*first, b"field"]) if first else cbor2.dumps([]))


@pytest.mark.parametrize("kind", [0, 9, 10, 255, -1, 2**64 - 1, -(2**64)])
def test_an_unknown_message_type_is_refused(kind: int) -> None:
    with pytest.raises(WireError, match="unknown message type"):
        decode_message(cbor2.dumps([kind, b"field"]))


def test_a_message_over_the_message_limit_is_refused_before_parsing() -> None:
    fits = encode_message(MessageType.RECORDS, b"\x00" * (MAX_MESSAGE_BYTES - 5))
    assert len(fits) == MAX_MESSAGE_BYTES
    assert decode_message(fits)[0] is MessageType.RECORDS
    too_big = encode_message(MessageType.RECORDS, b"\x00" * (MAX_MESSAGE_BYTES + 1))
    with pytest.raises(WireError, match="exceeds"):
        decode_message(too_big)


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff", b"\x82\x01", b"\x9f\x01", b"\x5a\xff\xff\xff\xff", b"\x81" * 5000 + b"\x01", b"\x1c"],
    ids=["empty", "break", "truncated-array", "unterminated", "huge-bstr", "deep-nesting", "reserved-ai"],
)
def test_bytes_that_are_not_cbor_are_refused(data: bytes) -> None:
    with pytest.raises(WireError):
        decode_message(data)


@CODEC
@given(data=st.binary(max_size=512))
def test_decoding_any_bytes_returns_a_message_or_raises_wire_error_only(data: bytes) -> None:
    try:
        kind, fields = decode_message(data)
    except WireError:
        return
    assert isinstance(kind, MessageType)
    assert isinstance(fields, tuple)


@CODEC
@given(kind=st.sampled_from(MessageType), fields=st.lists(cbor_fields, max_size=3), data=st.data())
def test_decoding_any_message_prefixed_bytes_raises_wire_error_only(
    kind: MessageType, fields: list[Any], data: st.DataObject
) -> None:
    message = bytearray(encode_message(kind, *fields))
    position = data.draw(st.integers(0, len(message) - 1))
    message[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(message)))
    with contextlib.suppress(WireError):
        decode_message(bytes(message[:cut]))


def test_trailing_bytes_after_a_message_are_refused() -> None:
    with pytest.raises(WireError):
        decode_message(encode_message(MessageType.ACCEPT) + b"junk")


# ---------------------------------------------------------------- HELLO and card references


#: Stands in for a signed card: anything but 13 bytes long is taken as one (and verified later).
CARD = b"\xd2\x84" + b"c" * 140
PEER = bytes(range(1, 9))
ROUTER_CAPS = Capabilities()


def test_a_hello_encodes_version_nonce_card_and_capabilities_in_order() -> None:
    nonce = bytes(range(NONCE_BYTES))
    kind, fields = decode_message(encode_hello(nonce, CARD))
    assert kind is MessageType.HELLO
    assert fields == (PROTOCOL_VERSION, nonce, CARD, [0, MAX_MESSAGE_BYTES])
    assert decode_hello(fields) == Hello(nonce, CARD, None, Capabilities(Role.ROUTER, MAX_MESSAGE_BYTES))


def test_a_session_offer_rides_as_the_capabilities_third_item_so_a_hello_keeps_four_fields() -> None:
    offer = bytes(range(32))
    _, fields = decode_message(encode_hello(NONCE, CARD, ROUTER_CAPS, offer))
    assert len(fields) == 4 and fields[3] == [0, MAX_MESSAGE_BYTES, offer]
    assert decode_hello(fields).session_key == offer
    assert Hello(NONCE, CARD, None, ROUTER_CAPS, offer).encode() == encode_hello(
        NONCE, CARD, ROUTER_CAPS, offer
    )


@pytest.mark.parametrize("offer", [b"", bytes(31), bytes(33), 7, "k" * 32], ids=repr)
def test_a_session_offer_that_is_not_32_bytes_is_malformed(offer: object) -> None:
    with pytest.raises(WireError, match=r"session offer|capabilities"):
        decode_hello((PROTOCOL_VERSION, NONCE, CARD, [0, MAX_MESSAGE_BYTES, offer]))


def test_capabilities_of_four_items_are_malformed() -> None:
    with pytest.raises(WireError):
        decode_hello((PROTOCOL_VERSION, NONCE, CARD, [0, MAX_MESSAGE_BYTES, bytes(32), 1]))


def test_a_proof_binds_both_offers_only_when_the_signer_offered_one() -> None:
    nonce, signer, verifier = b"n" * 16, b"s" * 32, b"v" * 32
    assert proof_message(nonce, signer, verifier) == HANDSHAKE_CONTEXT + nonce + signer + verifier
    both = proof_message(nonce, signer, verifier, b"S" * 32, b"V" * 32)
    assert both == SESSION_PROOF_CONTEXT + nonce + signer + verifier + b"S" * 32 + b"V" * 32
    # The verifier offered none (or an attacker stripped it): still a form of its own.
    only_signer = proof_message(nonce, signer, verifier, b"S" * 32)
    assert len({proof_message(nonce, signer, verifier), both, only_signer}) == 3


@pytest.mark.parametrize("kind", list(MessageType))
@pytest.mark.parametrize("extra", [0, 30])
def test_the_type_of_an_encoded_message_is_read_without_decoding_it(kind: MessageType, extra: int) -> None:
    assert message_type(encode_message(kind, *([b"x"] * extra))) == kind


@pytest.mark.parametrize("data", [b"", b"\x81", b"\xa1\x01\x02", b"\x82\x18\x20\x00"], ids=repr)
def test_bytes_that_do_not_start_as_a_message_have_no_type(data: bytes) -> None:
    assert message_type(data) is None


def test_a_leaf_says_so_and_names_the_largest_message_it_takes() -> None:
    leaf = Capabilities(Role.LEAF, 512)
    _, fields = decode_message(encode_hello(NONCE, CARD, leaf))
    assert fields[3] == [1, 512]
    assert decode_hello(fields).capabilities == leaf


@pytest.mark.parametrize(
    "capabilities",
    [[2, 512], [0, 255], [0, MAX_MESSAGE_BYTES + 1], [0], [0, 512, 1], "router", [0, "512"], [-1, 512]],
)
def test_capabilities_outside_the_protocol_are_a_wire_error(capabilities: Any) -> None:
    with pytest.raises(WireError, match="HELLO"):
        decode_hello((PROTOCOL_VERSION, NONCE, CARD, capabilities))


def test_a_digest_entry_is_peer_id_kind_and_big_endian_counter() -> None:
    entry = digest_entry(PEER, RecordKind.CARD, 0x01020304)
    assert entry == PEER + b"\x01" + b"\x01\x02\x03\x04"
    assert len(entry) == DIGEST_ENTRY_BYTES
    assert read_digest_entry(entry) == (PEER, RecordKind.CARD, 0x01020304)


def test_a_hello_may_name_its_card_by_digest_entry_instead_of_carrying_it() -> None:
    nonce = bytes(NONCE_BYTES)
    by_reference = encode_hello(nonce, digest_entry(PEER, RecordKind.CARD, 7))
    kind, fields = decode_message(by_reference)
    assert kind is MessageType.HELLO
    assert decode_hello(fields).reference == (PEER, 7)
    # Compact: the whole frame is a sixth of a 255-byte radio frame, whatever the card's size.
    assert len(frames_for(by_reference, 255, 0)[0]) <= 44 < len(encode_hello(nonce, CARD))


def test_a_hello_referencing_anything_but_a_card_is_refused() -> None:
    fields = (PROTOCOL_VERSION, bytes(NONCE_BYTES), digest_entry(PEER, RecordKind.LINKS, 7), [0, 512])
    with pytest.raises(WireError, match="card"):
        decode_hello(fields)


@pytest.mark.parametrize(
    "fields",
    [
        (PROTOCOL_VERSION, bytes(NONCE_BYTES), CARD),
        (PROTOCOL_VERSION, bytes(NONCE_BYTES), CARD, [0, 512], b"extra"),
        (PROTOCOL_VERSION, bytes(NONCE_BYTES - 1), CARD, [0, 512]),
        (PROTOCOL_VERSION, "nonce", CARD, [0, 512]),
        (PROTOCOL_VERSION, bytes(NONCE_BYTES), 7, [0, 512]),
    ],
    ids=["short", "long", "short-nonce", "text-nonce", "int-card"],
)
def test_a_hello_of_the_wrong_shape_is_a_wire_error(fields: tuple[Any, ...]) -> None:
    with pytest.raises(WireError, match="HELLO"):
        decode_hello(fields)


# ---------------------------------------------------------------- typed messages

NONCE = bytes(range(NONCE_BYTES))
SIGNATURE = b"s" * 64
ENTRY = digest_entry(PEER, RecordKind.LINKS, 3)

EVERY_MESSAGE: list[Message] = [
    Hello(NONCE, CARD, None),
    Hello(NONCE, digest_entry(PEER, RecordKind.CARD, 7), (PEER, 7)),
    Hello(NONCE, CARD, None, Capabilities(Role.LEAF, 1024)),
    Proof(SIGNATURE),
    Accept(),
    Accept(ask_back=True),
    Deny(),
    Records(()),
    Records((b"one", b"two" * 100)),
    Summary(b"12345678"),
    Digest(b"\x00" * 8, b"\xff" * 8, b""),
    Digest(PEER, PEER, ENTRY + digest_entry(PEER, RecordKind.CARD, 9)),
    CardRequest(),
]


def test_every_message_type_has_a_typed_value() -> None:
    assert {type(m).__name__ for m in EVERY_MESSAGE} == {
        "Hello",
        "Proof",
        "Accept",
        "Deny",
        "Records",
        "Summary",
        "Digest",
        "CardRequest",
    }


@pytest.mark.parametrize("message", EVERY_MESSAGE, ids=repr)
def test_every_typed_message_round_trips_to_an_equal_value(message: Message) -> None:
    assert parse_message(message.encode()) == message


@CODEC
@given(
    records=st.lists(st.binary(max_size=200), max_size=8),
    entries=st.lists(st.binary(min_size=DIGEST_ENTRY_BYTES, max_size=DIGEST_ENTRY_BYTES), max_size=8),
    lo=st.binary(min_size=8, max_size=8),
    hi=st.binary(min_size=8, max_size=8),
    summary=st.binary(min_size=8, max_size=8),
)
def test_records_digests_and_summaries_round_trip_whatever_their_bytes(
    records: list[bytes], entries: list[bytes], lo: bytes, hi: bytes, summary: bytes
) -> None:
    for message in (Records(tuple(records)), Digest(lo, hi, b"".join(entries)), Summary(summary)):
        assert parse_message(message.encode()) == message


def test_accept_1_encodes_as_accept_with_one_field() -> None:
    assert decode_message(Accept(ask_back=True).encode()) == (MessageType.ACCEPT, (1,))
    assert decode_message(Accept().encode()) == (MessageType.ACCEPT, ())


def test_digest_counters_map_every_entry_to_its_counter() -> None:
    digest = Digest(PEER, PEER, ENTRY + digest_entry(PEER, RecordKind.CARD, 9))
    assert digest.counters() == {(PEER, RecordKind.LINKS): 3, (PEER, RecordKind.CARD): 9}


MALFORMED: list[tuple[MessageType, tuple[Any, ...]]] = [
    (MessageType.HELLO, (PROTOCOL_VERSION, NONCE, CARD)),
    (MessageType.HELLO, (PROTOCOL_VERSION, NONCE, CARD, [0, 512], b"extra")),
    (MessageType.HELLO, (PROTOCOL_VERSION, NONCE + b"x", CARD, [0, 512])),
    (MessageType.HELLO, (PROTOCOL_VERSION, NONCE, 7, [0, 512])),
    (MessageType.HELLO, (PROTOCOL_VERSION, NONCE, digest_entry(PEER, RecordKind.LINKS, 7), [0, 512])),
    (MessageType.HELLO, (PROTOCOL_VERSION, NONCE, CARD, [3, 512])),
    (MessageType.PROOF, ()),
    (MessageType.PROOF, (SIGNATURE[:63],)),
    (MessageType.PROOF, (SIGNATURE + b"s",)),
    (MessageType.PROOF, (SIGNATURE, SIGNATURE)),
    (MessageType.PROOF, ("s" * 64,)),
    (MessageType.ACCEPT, (0,)),
    (MessageType.ACCEPT, (2,)),
    (MessageType.ACCEPT, (1, 1)),
    (MessageType.ACCEPT, (b"\x01",)),
    (MessageType.RECORDS, (1,)),
    (MessageType.RECORDS, ("record",)),
    (MessageType.RECORDS, (b"record", [b"nested"])),
    (MessageType.SUMMARY, ()),
    (MessageType.SUMMARY, (b"1234567",)),
    (MessageType.SUMMARY, (b"123456789",)),
    (MessageType.SUMMARY, (b"12345678", b"12345678")),
    (MessageType.SUMMARY, (12345678,)),
    (MessageType.DIGEST, (PEER, PEER)),
    (MessageType.DIGEST, (PEER, PEER, b"", b"")),
    (MessageType.DIGEST, (PEER[:7], PEER, b"")),
    (MessageType.DIGEST, (PEER, PEER + b"x", b"")),
    (MessageType.DIGEST, (PEER, PEER, ENTRY[:12])),
    (MessageType.DIGEST, (PEER, PEER, ENTRY + b"x")),
    (MessageType.DIGEST, (1, PEER, b"")),
]


@pytest.mark.parametrize(
    ("kind", "fields"), MALFORMED, ids=lambda v: v.name if isinstance(v, MessageType) else ""
)
def test_each_malformed_field_layout_is_a_wire_error(kind: MessageType, fields: tuple[Any, ...]) -> None:
    with pytest.raises(WireError) as caught:
        parse_message(encode_message(kind, *fields))
    assert not isinstance(caught.value, UnsupportedVersionError)


@pytest.mark.parametrize("field", [True, 1.0], ids=repr)
def test_accept_1_must_be_the_integer_1(field: Any) -> None:
    with pytest.raises(WireError):
        parse_message(encode_message(MessageType.ACCEPT, field))


@pytest.mark.parametrize("kind", [MessageType.DENY, MessageType.CARD_REQUEST], ids=lambda k: k.name)
def test_deny_and_card_request_ignore_fields_after_their_type(kind: MessageType) -> None:
    """Lenient on purpose: peers have always sent and accepted them so (tests/test_engine.py)."""
    assert (
        type(parse_message(encode_message(kind, b"later extension"))).__name__
        == {
            MessageType.DENY: "Deny",
            MessageType.CARD_REQUEST: "CardRequest",
        }[kind]
    )


@CODEC
@given(kind=st.sampled_from(MessageType), fields=st.lists(cbor_fields, max_size=4))
def test_parsing_any_fields_gives_a_typed_message_or_a_wire_error_only(
    kind: MessageType, fields: list[Any]
) -> None:
    try:
        message = parse_fields(kind, tuple(fields))
    except WireError:
        return
    assert parse_message(message.encode()) == message


@pytest.mark.parametrize("version", [0, 1, 2, 4, 2**32 - 1], ids=repr)
def test_a_hello_of_another_version_raises_unsupported_version(version: int) -> None:
    with pytest.raises(UnsupportedVersionError, match=f"version {version};"):
        parse_message(encode_message(MessageType.HELLO, version, NONCE, CARD))


@pytest.mark.parametrize(
    "version",
    [10**5000, -(10**5000), 2**64, -1, "2", True, 2.0, None, b"\x02"],
    ids=lambda v: type(v).__name__,
)
def test_an_unsupported_version_is_never_formatted_when_not_a_small_int(version: Any) -> None:
    with pytest.raises(UnsupportedVersionError) as caught:
        parse_message(encode_message(MessageType.HELLO, version, NONCE, CARD))
    text = str(caught.value)
    assert len(text) < 120
    assert f"version {type(version).__name__};" in text


def test_a_hello_with_no_fields_is_an_unsupported_version_too() -> None:
    with pytest.raises(UnsupportedVersionError, match="NoneType"):
        parse_message(encode_message(MessageType.HELLO))


def test_unsupported_version_is_a_wire_error() -> None:
    assert issubclass(UnsupportedVersionError, WireError)


def test_only_records_summary_and_digest_need_an_established_link() -> None:
    assert frozenset({MessageType.RECORDS, MessageType.SUMMARY, MessageType.DIGEST}) == AFTER_HANDSHAKE
