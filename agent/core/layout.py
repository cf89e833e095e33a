"""The decoder's fast path: the two record layouts read straight from their bytes.

Almost every record received is a links record or a card without metadata, whose
payloads (``docs/ARCHITECTURE.md`` §3) are fixed sequences of CBOR heads::

    links  85 02 58 20 <key 32> <uint> <uint> <array n> (49 <9 B> | 4B <11 B>){n}
    card   88 01 58 20 <key 32> <uint> <uint> <tstr> <tstr> <tstr> A0

Reading them here costs a few byte comparisons instead of a general CBOR decode
and the deterministic re-encode that proves there is one byte form per record:
each head is checked to be the shortest form as it is read, so a payload accepted
here *is* deterministic CBOR. Only the structure is read, and a card's three texts
are declined over their byte limits (:mod:`agent.core.limits`); the limits on
counts and type codes stay with :mod:`agent.core.records`. A links record's
connections are returned as their bytes (the items after the array head, each
``49 <9 B>`` or ``4B <11 B>``) and as (peer id, type code, distance or ``None``)
triples: the receiver keeps the bytes and builds its connection entries from
them only if something reads them (:func:`connections`).

Anything else (metadata, a non-shortest head, a tag, an indefinite length, a
truncation, a wrong type, invalid UTF-8, trailing bytes) yields ``None`` and the
caller falls back to the general decoder, which then decides: the fast path only
ever accepts what the general decoder accepts, with the same values.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final, TypeAlias

from agent.core.limits import MAX_AGENT_VERSION_BYTES, MAX_DEVICE_NAME_BYTES, MAX_OS_BYTES

LINKS_PREFIX: Final = b"\x85\x02\x58\x20"  # array(5), kind 2, bstr(32)
CARD_PREFIX: Final = b"\x88\x01\x58\x20"  # array(8), kind 1, bstr(32)
_KEY_END: Final = 36
_EMPTY_MAP: Final = b"\xa0"
#: A connection with a distance: bstr(11) head 4B, peer id (8), type code, distance (uint16 BE).
_MEASURED_HEAD: Final = b"\x4b"
#: Connections that all have a distance, read in one C loop (the pad byte skips each head).
_measured: Final = struct.Struct(">x8sBH").iter_unpack

#: A connection as read: (peer id, connection type code, distance in dm or ``None``).
RawConnection: TypeAlias = tuple[bytes, int, int | None]
#: (public key, counter, expiry, how many connections, their items' bytes, the connections read
#: from them).
RawLinks: TypeAlias = tuple[bytes, int, int, int, bytes, Iterable[RawConnection]]
#: (public key, counter, expiry, device name, os, agent version), each text within its byte
#: limit; metadata is empty.
RawCard: TypeAlias = tuple[bytes, int, int, str, str, str]


class _NotFast(Exception):
    """The payload leaves the fast layout; the general decoder takes over."""


def _uint32(data: bytes, i: int) -> tuple[int, int]:
    """A shortest-form unsigned integer below 2**32 at ``i``: (value, next offset)."""
    head = data[i]
    if head < 0x18:
        return head, i + 1
    if head == 0x18:
        value = data[i + 1]
        if value >= 0x18:
            return value, i + 2
    elif head == 0x19:
        if i + 3 <= len(data) and (value := int.from_bytes(data[i + 1 : i + 3], "big")) >= 0x100:
            return value, i + 3
    elif head == 0x1A and i + 5 <= len(data):
        value = int.from_bytes(data[i + 1 : i + 5], "big")
        if value >= 0x10000:
            return value, i + 5
    raise _NotFast


def _counter_expiry(data: bytes) -> tuple[int, int, int]:
    """The two uint32s after the key: (counter, expiry, next offset).

    The usual forms (a counter below 24, an expiry in four bytes) are read here, the rest by
    :func:`_uint32`: this runs for every record received.
    """
    head = data[_KEY_END]
    if head < 0x18:
        counter, i = head, _KEY_END + 1
    else:
        counter, i = _uint32(data, _KEY_END)
    head = data[i]
    if head == 0x1A and i + 5 <= len(data):
        expiry = int.from_bytes(data[i + 1 : i + 5], "big")
        if expiry < 0x10000:
            raise _NotFast
        return counter, expiry, i + 5
    expiry, i = _uint32(data, i)
    return counter, expiry, i


def _text(data: bytes, i: int, limit: int) -> tuple[str, int]:
    """A shortest-form text string of at most ``limit`` (< 256) bytes at ``i``: (text, next offset)."""
    head = data[i]
    if 0x60 <= head < 0x78:
        start = i + 1
        end = start + head - 0x60
    elif head == 0x78 and data[i + 1] >= 0x18:
        start = i + 2
        end = start + data[i + 1]
    else:
        raise _NotFast
    if end > len(data) or end - start > limit:
        raise _NotFast
    return data[start:end].decode("utf-8"), end


def read_links(payload: bytes) -> RawLinks | None:
    """The fields of a links payload in the fast layout, or ``None``."""
    if not payload.startswith(LINKS_PREFIX):
        return None
    try:
        public_key = payload[4:_KEY_END]
        counter, expiry, i = _counter_expiry(payload)
        head = payload[i]
        if 0x80 <= head < 0x98:
            count, i = head - 0x80, i + 1
        elif head == 0x98 and payload[i + 1] >= 0x18:
            count, i = payload[i + 1], i + 2
        else:
            return None
    except (_NotFast, IndexError):
        return None
    items = payload[i:]
    if len(items) == 12 * count and items[::12] == _MEASURED_HEAD * count:
        # Every connection with a distance (what radios report): all read in one C loop.
        return public_key, counter, expiry, count, items, _measured(items)
    read = _walk(items)
    if read is None or len(read) != count:
        return None
    return public_key, counter, expiry, count, items, read


def _walk(items: bytes) -> list[RawConnection] | None:
    """Connection items one by one, or ``None`` unless they are well formed to the last byte."""
    read: list[RawConnection] = []
    append = read.append
    i, end = 0, len(items)
    while i < end:
        head = items[i]
        if head == 0x4B and i + 12 <= end:  # bstr(11): peer id, type, distance (what radios report)
            append((items[i + 1 : i + 9], items[i + 9], items[i + 10] << 8 | items[i + 11]))
            i += 12
        elif head == 0x49 and i + 10 <= end:  # bstr(9): peer id, type
            append((items[i + 1 : i + 9], items[i + 9], None))
            i += 10
        else:
            return None
    return read


def connections(items: bytes) -> list[RawConnection]:
    """The connections in the items' bytes that :func:`read_links` returned, in their order."""
    read = _walk(items)
    if read is None:
        raise ValueError("not the connection items of a links payload")
    return read


def read_card(payload: bytes) -> RawCard | None:
    """The fields of a card payload without metadata in the fast layout, or ``None``."""
    if not payload.startswith(CARD_PREFIX) or not payload.endswith(_EMPTY_MAP):
        return None
    try:
        public_key = payload[4:_KEY_END]
        counter, expiry, i = _counter_expiry(payload)
        device_name, i = _text(payload, i, MAX_DEVICE_NAME_BYTES)
        os_name, i = _text(payload, i, MAX_OS_BYTES)
        agent_version, i = _text(payload, i, MAX_AGENT_VERSION_BYTES)
    except (_NotFast, IndexError, UnicodeDecodeError):
        return None
    if i != len(payload) - 1:
        return None
    return public_key, counter, expiry, device_name, os_name, agent_version
