"""Specification of the decoder's fast path (agent.core.layout, used by records.open_record).

The fast path reads the two common payload shapes straight from their bytes. It
may decline any payload (the general decoder then decides), but whatever it
accepts, the general decoder accepts too, with the same values: the two paths
never disagree on a record.
"""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import QUICK, THOROUGH, cards, key_pair, links_bodies, uint32s

from agent.core import cose, layout
from agent.core.errors import RecordError
from agent.core.records import (
    ConnectionType,
    Envelope,
    LinkEntry,
    Links,
    _open_fast,
    _open_general,
    card_payload,
    links_payload,
    make_card,
    sign_record,
)

PRIVATE, PUBLIC = key_pair(5)


def both_paths(payload: bytes) -> tuple[Envelope | None, Envelope | RecordError]:
    fast = _open_fast(payload, b"\x00" * 64)
    try:
        general: Envelope | RecordError = _open_general(payload, b"\x00" * 64)
    except RecordError as exc:
        general = exc
    return fast, general


def same(fast: Envelope, general: Any) -> bool:
    if not (isinstance(general, Envelope) and fast == general):
        return False
    if isinstance(fast.body, Links):  # the fast path builds the derived fields itself; == skips them
        assert isinstance(general.body, Links)
        return (
            list(fast.body.claims.items()) == list(general.body.claims.items())
            and fast.body.neighbour_ids == general.body.neighbour_ids
        )
    return True


@THOROUGH
@given(body=links_bodies, counter=uint32s, expiry=uint32s)
def test_every_signed_links_record_takes_the_fast_path_with_the_same_values(
    body: Any, counter: int, expiry: int
) -> None:
    payload = cose.open_envelope(sign_record(PRIVATE, PUBLIC, counter, expiry, body).raw)[0]
    fast, general = both_paths(payload)
    assert fast is not None and same(fast, general)


@THOROUGH
@given(card=cards, counter=uint32s, expiry=uint32s)
def test_a_card_takes_the_fast_path_exactly_when_it_has_no_metadata(
    card: Any, counter: int, expiry: int
) -> None:
    payload = card_payload(PUBLIC, counter, expiry, card)
    fast, general = both_paths(payload)
    if card.metadata or isinstance(general, RecordError) or isinstance(general.body, RecordError):
        assert fast is None
    else:
        assert fast is not None and same(fast, general)


@QUICK
@given(data=st.data(), counter=uint32s, links=st.booleans())
def test_a_corrupted_payload_is_never_accepted_differently(
    data: st.DataObject, counter: int, links: bool
) -> None:
    if links:
        payload = links_payload(PUBLIC, counter, counter, data.draw(links_bodies))
    else:
        payload = card_payload(PUBLIC, counter, counter, make_card("kitchen", "Linux", "0.1.0", {}))
    position = data.draw(st.integers(0, len(payload) - 1))
    replacement = data.draw(st.binary(min_size=0, max_size=3))
    corrupted = payload[:position] + replacement + payload[position + 1 :]

    fast, general = both_paths(corrupted)
    assert fast is None or same(fast, general)


def test_shapes_outside_the_layout_are_declined() -> None:
    radio = LinkEntry(b"\x01" * 8, ConnectionType.RADIO, 25)
    payload = links_payload(PUBLIC, 7, 9, Links((radio, LinkEntry(b"\x02" * 8, ConnectionType.WEB_SOCKET))))
    assert layout.read_links(payload) is not None
    assert layout.read_links(payload + b"\x00") is None  # trailing byte
    assert layout.read_links(payload[:-1]) is None  # cut short
    non_shortest = payload[:36] + b"\x18\x07" + payload[37:]  # counter 7 in two bytes
    assert layout.read_links(non_shortest) is None
    assert layout.read_card(payload) is None

    card = card_payload(PUBLIC, 1, 2, make_card("kitchen", "Linux", "0.1.0", {}))
    assert layout.read_card(card) == (PUBLIC, 1, 2, "kitchen", "Linux", "0.1.0")
    assert layout.read_card(card.replace(b"kitchen", b"kitch\xffn")) is None  # invalid UTF-8
    assert layout.read_card(card[:-1] + b"\xa1\x61a\x01") is None  # metadata: the general path


def test_a_received_links_body_reads_its_entries_only_when_asked() -> None:
    entries = (
        LinkEntry(b"\x02" * 8, ConnectionType.RADIO, 25),
        LinkEntry(b"\x01" * 8, ConnectionType.WEB_SOCKET),
        LinkEntry(b"\x02" * 8, ConnectionType.RADIO, 40),  # the same claim twice: the later distance
    )
    signed = Links(entries)
    fast = _open_fast(links_payload(PUBLIC, 7, 9, signed), b"\x00" * 64)
    assert fast is not None and isinstance(fast.body, Links)
    body = fast.body
    assert body._entries is None  # nothing read them yet
    assert dict(body.claims) == {(b"\x02" * 8, 5): 40, (b"\x01" * 8, 4): None} == dict(signed.claims)
    assert body.neighbour_ids == (b"\x02" * 8, b"\x01" * 8) == signed.neighbour_ids
    assert body.entries == entries and body._entries == entries  # read once, then kept
    assert body == signed and hash(body) == hash(signed) and repr(body) == repr(signed)


def test_a_links_body_is_immutable_and_pickles_to_an_equal_one() -> None:
    payload = links_payload(PUBLIC, 7, 9, Links((LinkEntry(b"\x03" * 8, ConnectionType.RADIO, 1),)))
    fast = _open_fast(payload, b"\x00" * 64)
    assert fast is not None and isinstance(fast.body, Links)
    for body in (fast.body, Links(())):
        with pytest.raises(dataclasses.FrozenInstanceError):
            body.claims = {}  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            del body.neighbour_ids  # type: ignore[misc]
        copy = pickle.loads(pickle.dumps(body))
        assert copy == body and dict(copy.claims) == dict(body.claims)
        assert copy.neighbour_ids == body.neighbour_ids


@pytest.mark.parametrize("code", [0, 6, 255])
def test_an_unknown_connection_type_is_malformed_on_both_paths(code: int) -> None:
    measured = links_payload(PUBLIC, 7, 9, Links((LinkEntry(b"\x03" * 8, ConnectionType.RADIO, 1),)))
    plain = links_payload(PUBLIC, 7, 9, Links((LinkEntry(b"\x03" * 8, ConnectionType.RADIO),)))
    for payload in (measured, plain):
        at = payload.index(b"\x03" * 8) + 8
        fast, general = both_paths(payload[:at] + bytes([code]) + payload[at + 1 :])
        assert fast is None
        assert isinstance(general, Envelope) and isinstance(general.body, RecordError)
        assert general.body.reason == "malformed"
        assert f"unknown connection type code {code}" in general.body.detail
