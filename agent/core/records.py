"""The two signed record kinds and their deterministic CBOR payloads.

A peer publishes two records, each signed whole (see :mod:`agent.core.cose`):

* the **card** -- what changes rarely::

      [1, public_key(32), counter, expiry, device_name, os, agent_version, metadata]
      [1, public_key(32), counter, expiry, device_name, os, agent_version, metadata, certificate]

  ``metadata`` is the JSON object as a CBOR map (text keys; JSON values only).
  An empty map means "no metadata" and is signed too, so a relay cannot strip it.
  ``certificate`` (a fleet member's card only) is the device certificate from the
  fleet CA (:mod:`agent.core.certs`, a COSE_Sign1 of 1..4096 bytes) as a byte
  string; the card's signature covers it, the CA's signature inside it binds the
  key to its identity metadata, and the whole card stays within 4096 bytes. This
  module carries it opaquely; :mod:`agent.core.trust` judges it.

* the **links** record -- what changes often::

      [2, public_key(32), counter, expiry, [connection, ...]]

  Each connection is one byte string: the neighbour's 8-byte peer id, one byte
  of connection type code, then -- only when a radio measured one -- the
  approximate distance as a big-endian uint16 in decimetres (saturating at
  6553.5 m). Byte strings rather than arrays keep a links record with eight
  connections inside one 255-byte LoRa frame.

``counter`` is a uint32 that only grows per peer (shared by both kinds);
``expiry`` is Unix seconds after which receivers drop the record. All integers
and maps are in RFC 8949 §4.2 deterministic encoding; a decoder re-encodes what
it read and rejects anything that differs.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import struct
import sys
from collections.abc import Mapping
from dataclasses import FrozenInstanceError, dataclass
from types import MappingProxyType
from typing import Any, Final, NamedTuple, TypeAlias

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.core import cose
from agent.core.errors import MetadataError, MetadataTooLargeError, RecordError
from agent.core.layout import connections, read_card, read_links
from agent.core.limits import (
    MAX_AGENT_VERSION_BYTES,
    MAX_CERTIFICATE_BYTES,
    MAX_CONNECTIONS_PER_RECORD,
    MAX_COUNTER,
    MAX_DEVICE_NAME_BYTES,
    MAX_METADATA_DEPTH,
    MAX_METADATA_JSON_BYTES,
    MAX_OS_BYTES,
    MAX_RECORD_BYTES,
    PEER_ID_BYTES,
    PUBLIC_KEY_BYTES,
)

#: An upper bound of (compact JSON bytes) / (CBOR bytes) for the same metadata.
_JSON_EXPANSION_BOUND: Final = 8

#: Distances saturate at this many decimetres (uint16).
MAX_DISTANCE_DM: Final = 65535

JsonValue: TypeAlias = Any
Metadata: TypeAlias = Mapping[str, JsonValue]


class RecordKind(enum.IntEnum):
    """Which of a peer's two records this is."""

    CARD = 1
    LINKS = 2

    # Enum hashes by name in Python code; records are keyed by kind on every hop,
    # so hash as the int it equals (consistent with IntEnum's equality).
    __hash__ = int.__hash__


#: The two kinds, bound once for the paths every record takes: in Python 3.11 reading a member
#: through its enum class (``RecordKind.LINKS``) costs a metaclass lookup, eight times a global's.
CARD: Final = RecordKind.CARD
LINKS: Final = RecordKind.LINKS


class ConnectionType(enum.Enum):
    """How two peers are connected; values keep the reference API's spellings."""

    BLUETOOTH = "Bluetooth"
    ACCESS_POINT = "AccessPoint"
    P2P_WIFI = "P2PWiFi"
    WEB_SOCKET = "WebSocket"
    RADIO = "Radio"

    # Enum hashes by name in Python code; every links record received builds a claims
    # map keyed by type code. Members are singletons compared by identity, so hashing
    # by identity (in C) is consistent with equality.
    __hash__ = object.__hash__


#: Wire codes of connection types (one CBOR byte each). Never renumber.
CONNECTION_TYPE_CODES: Final[Mapping[ConnectionType, int]] = MappingProxyType(
    {
        ConnectionType.BLUETOOTH: 1,
        ConnectionType.ACCESS_POINT: 2,
        ConnectionType.P2P_WIFI: 3,
        ConnectionType.WEB_SOCKET: 4,
        ConnectionType.RADIO: 5,
    }
)
CONNECTION_TYPE_BY_CODE: Final[Mapping[int, ConnectionType]] = MappingProxyType(
    {code: kind for kind, code in CONNECTION_TYPE_CODES.items()}
)


#: Type codes by type and types by code, as plain dicts (the mappings above are read-only).
_CODES: Final[dict[ConnectionType, int]] = dict(CONNECTION_TYPE_CODES)
_TYPE_BY_CODE: Final[dict[int, ConnectionType]] = dict(CONNECTION_TYPE_BY_CODE)
#: A record's 13-byte digest entry, peer id(8) kind(1) counter(4, BE): what its summary hash is the
#: SHA-256 of, and what DIGEST and HELLO's card reference carry (wire.digest_entry). One C call.
pack_digest_entry: Final = struct.Struct(">8sBI").pack
#: The hash's first 8 bytes as an integer.
_first_uint64: Final = struct.Struct(">Q").unpack_from
#: Frozen dataclasses set their computed fields through this; bound once, not looked up per record.
_set: Final = object.__setattr__
_new_object: Final = object.__new__
#: Named tuples built per record go straight through ``tuple.__new__``: their generated
#: ``__new__`` is a Python function that only forwards its arguments to it.
_new_tuple: Final = tuple.__new__
# SHA-256, not BLAKE2b: a leaf on MicroPython has SHA-256 natively and must compute its summary.
_sha256: Final = hashlib.sha256


@dataclass(frozen=True, slots=True)
class Card:
    """The rarely-changing part of a peer: who it is and its metadata."""

    device_name: str
    os: str
    agent_version: str
    metadata: Metadata  # read-only mapping
    #: The fleet CA's certificate for this peer's key (raw COSE_Sign1), or ``b""``: none.
    certificate: bytes = b""


class LinkEntry(NamedTuple):
    """One connection as its originating peer reports it.

    A named tuple, immutable like the other values: every links record received
    builds one per connection, and a tuple is built in a fraction of a frozen
    dataclass's time.
    """

    peer_id: bytes
    connection_type: ConnectionType
    distance_dm: int | None = None


def mean_distance_dm(a: int | None, b: int | None) -> int | None:
    """One connection's distance from both ends' claims: one measured side wins, two are averaged."""
    if a is None:
        return b
    if b is None:
        return a
    return (a + b) // 2


class Links:
    """The often-changing part of a peer: its current connections.

    ``entries`` are the connections in the record's order. ``claims`` maps
    (neighbour peer id, connection type code) to the distance, computed once here
    because the graph and flooding consult it constantly. ``neighbour_ids`` is a
    tuple, not a set: a node holds one per peer of the mesh, and for the few ids of
    a record a tuple is a fifth of a set's memory with membership tests as fast.

    ``Links(entries)`` builds one from its entries (a signer). The decoder builds
    one from a received payload's connection bytes (:func:`_decoded_links`) with
    ``claims`` and ``neighbour_ids`` only: the entries, which nothing on a
    record's way in reads, are read from those bytes the first time they are
    asked for. Immutable, compared and hashed by its entries.
    """

    __slots__ = ("_entries", "_items", "claims", "neighbour_ids")

    _entries: tuple[LinkEntry, ...] | None
    #: The connection items' bytes of a decoded payload (``b""``: built from entries).
    _items: bytes
    claims: Mapping[tuple[bytes, int], int | None]
    neighbour_ids: tuple[bytes, ...]

    def __init__(self, entries: tuple[LinkEntry, ...]) -> None:
        codes = _CODES
        claims = {(e.peer_id, codes[e.connection_type]): e.distance_dm for e in entries}
        _set(self, "_entries", entries)
        _set(self, "_items", b"")
        _set(self, "claims", MappingProxyType(claims))
        _set(self, "neighbour_ids", tuple({pid: None for pid, _ in claims}))

    @property
    def entries(self) -> tuple[LinkEntry, ...]:
        entries = self._entries
        if entries is None:
            by_code = _TYPE_BY_CODE
            entries = tuple(LinkEntry(pid, by_code[code], dm) for pid, code, dm in connections(self._items))
            _set(self, "_entries", entries)
        return entries

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Links):
            return NotImplemented
        return self.entries == other.entries

    def __hash__(self) -> int:
        return hash(self.entries)

    def __repr__(self) -> str:
        return f"Links(entries={self.entries!r})"

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def __reduce__(self) -> tuple[type[Links], tuple[tuple[LinkEntry, ...]]]:
        return Links, (self.entries,)


# The decoder's fast path builds a card or links body for every record received. A frozen
# dataclass's generated ``__init__`` sets each field through ``object.__setattr__``; the slots'
# own setters build the same value in about half the time. Equality, hashing and immutability
# are the dataclass's, unchanged.
_set_card_name: Final = Card.__dict__["device_name"].__set__
_set_card_os: Final = Card.__dict__["os"].__set__
_set_card_version: Final = Card.__dict__["agent_version"].__set__
_set_card_metadata: Final = Card.__dict__["metadata"].__set__
_set_card_certificate: Final = Card.__dict__["certificate"].__set__
_set_links_entries: Final = Links.__dict__["_entries"].__set__
_set_links_items: Final = Links.__dict__["_items"].__set__
_set_links_claims: Final = Links.__dict__["claims"].__set__
_set_links_neighbours: Final = Links.__dict__["neighbour_ids"].__set__


def _plain_card(device_name: str, os: str, agent_version: str) -> Card:
    """``Card(device_name, os, agent_version, EMPTY_METADATA)``, for the decoder's fast path."""
    card: Card = _new_object(Card)
    _set_card_name(card, device_name)
    _set_card_os(card, os)
    _set_card_version(card, agent_version)
    _set_card_metadata(card, EMPTY_METADATA)
    _set_card_certificate(card, b"")
    return card


def _decoded_links(
    items: bytes, claims: dict[tuple[bytes, int], int | None], neighbour_ids: tuple[bytes, ...]
) -> Links:
    """The body of a received links payload whose connection items are ``items``, for the decoder's
    fast path, which read ``claims`` and ``neighbour_ids`` from them: they must be exactly what
    ``Links(entries)`` derives from the entries the items hold."""
    links: Links = _new_object(Links)
    _set_links_entries(links, None)
    _set_links_items(links, items)
    _set_links_claims(links, MappingProxyType(claims))
    _set_links_neighbours(links, neighbour_ids)
    return links


class _RecordFields(NamedTuple):
    kind: RecordKind
    public_key: bytes
    counter: int
    expiry: int
    body: Card | Links
    raw: bytes
    peer_id: bytes
    summary_hash: int


class Record(_RecordFields):
    """A verified signed record and the exact bytes it arrived as.

    ``Record(kind, public_key, counter, expiry, body, raw)``; ``peer_id`` (the
    key's first 8 bytes) and ``summary_hash`` (this record's contribution to a
    holder's summary, see SUMMARY) are derived once, here. An immutable named
    tuple: one is built for every record received, and a tuple is built in a
    fraction of a frozen dataclass's time.
    """

    __slots__ = ()

    def __new__(
        cls, kind: RecordKind, public_key: bytes, counter: int, expiry: int, body: Card | Links, raw: bytes
    ) -> Record:
        return _new_record(kind, public_key, counter, expiry, body, raw, public_key[:PEER_ID_BYTES])


def _new_record(
    kind: RecordKind, public_key: bytes, counter: int, expiry: int, body: Card | Links, raw: bytes, pid: bytes
) -> Record:
    """The Record with its peer id ``pid`` (keys.peer_id) already read: the verifier builds one for
    every record received. The summary hash is the first 8 bytes, big-endian, of SHA-256 over the
    record's digest entry (``wire.digest_entry``: peer id, kind, counter as uint32 BE)."""
    summary: int = _first_uint64(_sha256(pack_digest_entry(pid, kind, counter)).digest())[0]
    record: Record = _new_tuple(Record, (kind, public_key, counter, expiry, body, raw, pid, summary))
    return record


# ---------------------------------------------------------------- metadata


#: The one empty metadata mapping: most held cards share it instead of an empty dict each.
EMPTY_METADATA: Final[Metadata] = MappingProxyType({})


def freeze_metadata(value: JsonValue) -> JsonValue:
    """Deep read-only copy of JSON data (maps become mappingproxy, lists tuples)."""
    if isinstance(value, Mapping):
        if not value:
            return EMPTY_METADATA
        return MappingProxyType({k: freeze_metadata(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze_metadata(v) for v in value)
    return value


def thaw_metadata(value: JsonValue) -> JsonValue:
    """Plain dict/list copy of frozen metadata (for JSON and for callers to mutate)."""
    if isinstance(value, Mapping):
        return {k: thaw_metadata(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [thaw_metadata(v) for v in value]
    return value


def metadata_json(metadata: Metadata) -> str:
    """The canonical compact JSON text of metadata (sorted keys, UTF-8)."""
    return json.dumps(thaw_metadata(metadata), separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def check_metadata_value(value: JsonValue, depth: int = 0) -> None:
    """Raise :class:`MetadataError` unless ``value`` is plain JSON data."""
    if depth > MAX_METADATA_DEPTH:
        raise MetadataError(f"metadata nests deeper than {MAX_METADATA_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, str):
        _check_utf8(value)
        return
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise MetadataError(f"metadata integer {value} does not fit 64 bits")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise MetadataError("metadata may not contain NaN or Infinity (not JSON)")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise MetadataError(f"metadata keys must be strings, got {type(key).__name__}")
            _check_utf8(key)
            check_metadata_value(item, depth + 1)
        return
    if isinstance(value, list | tuple):
        for item in value:
            check_metadata_value(item, depth + 1)
        return
    raise MetadataError(f"metadata values must be JSON data, got {type(value).__name__}")


def _check_utf8(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise MetadataError("metadata text must be valid Unicode (found a lone surrogate)") from None


def parse_metadata_json(text: str) -> Metadata:
    """Validate user JSON text: an object, at most 4096 bytes. Returns a frozen mapping."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise MetadataError("metadata JSON must be valid Unicode (found a lone surrogate)") from None
    if size > MAX_METADATA_JSON_BYTES:
        raise MetadataTooLargeError("metadata JSON", size, MAX_METADATA_JSON_BYTES)
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise MetadataError(f"metadata is not valid JSON: {exc}") from None
    return validate_metadata(value)


def validate_metadata(value: JsonValue) -> Metadata:
    """Validate a metadata object: JSON data, an object, compact JSON ≤ 4096 bytes."""
    if not isinstance(value, Mapping):
        raise MetadataError(f"metadata must be a JSON object, got {type(value).__name__}")
    check_metadata_value(value)
    size = len(metadata_json(value).encode("utf-8"))
    if size > MAX_METADATA_JSON_BYTES:
        raise MetadataTooLargeError("metadata JSON", size, MAX_METADATA_JSON_BYTES)
    frozen: Metadata = freeze_metadata(value)
    return frozen


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


# ---------------------------------------------------------------- encoding


def _cut(text: str, limit: int) -> str:
    data = text.encode("utf-8")[:limit]
    return data.decode("utf-8", errors="ignore")


def card_payload(public_key: bytes, counter: int, expiry: int, card: Card) -> bytes:
    return cbor2.dumps(
        [
            int(RecordKind.CARD),
            public_key,
            counter,
            expiry,
            card.device_name,
            card.os,
            card.agent_version,
            thaw_metadata(card.metadata),
            *([card.certificate] if card.certificate else []),
        ],
        canonical=True,
    )


def links_payload(public_key: bytes, counter: int, expiry: int, links: Links) -> bytes:
    entries = [
        e.peer_id
        + bytes([CONNECTION_TYPE_CODES[e.connection_type]])
        + (b"" if e.distance_dm is None else max(0, min(e.distance_dm, MAX_DISTANCE_DM)).to_bytes(2, "big"))
        for e in links.entries
    ]
    return cbor2.dumps([int(RecordKind.LINKS), public_key, counter, expiry, entries], canonical=True)


def make_card(device_name: str, os: str, agent_version: str, metadata: Metadata) -> Card:
    """A card with over-long strings cut to their byte limits."""
    return Card(
        device_name=_cut(device_name, MAX_DEVICE_NAME_BYTES),
        os=_cut(os, MAX_OS_BYTES),
        agent_version=_cut(agent_version, MAX_AGENT_VERSION_BYTES),
        metadata=freeze_metadata(metadata),
    )


def worst_case_card_size(public_key: bytes, card: Card) -> int:
    """Signed size of this card with the widest counter and expiry encodings."""
    payload = card_payload(public_key, MAX_COUNTER, MAX_COUNTER, card)
    return len(payload) + cose.envelope_overhead(len(payload))


def check_card_budget(public_key: bytes, card: Card) -> None:
    """Raise :class:`MetadataTooLargeError` if this card could not be signed within 4096 bytes."""
    size = worst_case_card_size(public_key, card)
    if size > MAX_RECORD_BYTES:
        raise MetadataTooLargeError("the signed card with this metadata", size, MAX_RECORD_BYTES)


def sign_record(
    private_key: Ed25519PrivateKey,
    public_key: bytes,
    counter: int,
    expiry: int,
    body: Card | Links,
) -> Record:
    """Sign a card or links record. The caller owns counter allocation."""
    for name, value in (("counter", counter), ("expiry", expiry)):
        if not 0 <= value <= MAX_COUNTER:
            raise ValueError(f"{name} {value} outside 0..{MAX_COUNTER}")
    if isinstance(body, Card):
        kind, payload = RecordKind.CARD, card_payload(public_key, counter, expiry, body)
    else:
        if len(body.entries) > MAX_CONNECTIONS_PER_RECORD:
            raise ValueError(f"at most {MAX_CONNECTIONS_PER_RECORD} connections per record")
        kind, payload = RecordKind.LINKS, links_payload(public_key, counter, expiry, body)
    raw = cose.sign(private_key, payload)
    if len(raw) > MAX_RECORD_BYTES:
        raise RecordError("oversized", f"signed record would be {len(raw)} bytes")
    # Never publish what a receiver would reject (over-long names, bad ids, ...).
    try:
        checked = open_record(raw).body
    except RecordError as exc:
        raise ValueError(f"refusing to sign an invalid record: {exc}") from None
    if isinstance(checked, RecordError):
        raise ValueError(f"refusing to sign an invalid record: {checked}")
    return Record(kind, public_key, counter, expiry, checked, raw)


# ---------------------------------------------------------------- decoding


class Envelope(NamedTuple):
    """A record's identifying fields, parsed but not yet verified.

    ``body`` is the checked card or links body, or the :class:`RecordError` that
    :func:`verify_record` raises for it once the signature has been checked: a
    record's body is judged last (``docs/ARCHITECTURE.md`` §3), though it is read
    with the rest. ``peer_id`` is the key's first 8 bytes, read once here for the
    checks before the signature and the :class:`Record` after it. A named tuple
    rather than a frozen dataclass: one is built for every record received, and a
    tuple is built in a third of the time.
    """

    kind: RecordKind
    public_key: bytes
    counter: int
    expiry: int
    body: Card | Links | RecordError
    payload: bytes
    signature: bytes
    peer_id: bytes


def open_record(raw: bytes) -> Envelope:
    """Parse a record's structure (no signature check). Raises :class:`RecordError`."""
    payload, signature = cose.open_envelope(raw)
    fast = _open_fast(payload, signature)
    return fast if fast is not None else _open_general(payload, signature)


def _open_fast(payload: bytes, signature: bytes) -> Envelope | None:
    """The common shapes through :mod:`agent.core.layout`; ``None`` for anything else or anything wrong."""
    head = payload[0] if payload else -1  # array(5): a links record; array(8): a card
    if head == 0x85:
        links = read_links(payload)
        if links is None:
            return None
        public_key, counter, expiry, count, items, connections = links
        if count > MAX_CONNECTIONS_PER_RECORD:
            return None
        # One pass reads what Links(entries) would derive from the entries, without the entries
        # (a loop, not comprehensions: each of those is a function object made and called per record).
        by_code = _TYPE_BY_CODE
        claims: dict[tuple[bytes, int], int | None] = {}
        neighbours: dict[bytes, None] = {}
        for pid, code, dm in connections:
            if code not in by_code:  # an unknown type code: the general decoder names it
                return None
            claims[(pid, code)] = dm
            neighbours[pid] = None
        body = _decoded_links(items, claims, tuple(neighbours))
        pid = payload[4:12]  # keys.peer_id of the key at payload[4:36]
        return _new_tuple(Envelope, (LINKS, public_key, counter, expiry, body, payload, signature, pid))
    if head != 0x88:
        return None
    card = read_card(payload)
    if card is None:
        return None
    public_key, counter, expiry, name, os_name, version = card
    card_body = _plain_card(name, sys.intern(os_name), sys.intern(version))
    pid = payload[4:12]  # keys.peer_id of the key at payload[4:36]
    return _new_tuple(Envelope, (CARD, public_key, counter, expiry, card_body, payload, signature, pid))


def _open_general(payload: bytes, signature: bytes) -> Envelope:
    """Any other payload: a general CBOR decode, then a re-encode proving it is deterministic."""
    try:
        fields = cbor2.loads(payload)
    except Exception as exc:
        raise RecordError("malformed", f"payload is not CBOR: {exc}") from None
    if not isinstance(fields, list | tuple) or len(fields) < 4:
        raise RecordError("malformed", "payload must be an array of at least 4 items")
    _check_plain(fields, len(payload))
    kind_code, public_key, counter, expiry = fields[:4]
    if kind_code not in (RecordKind.CARD, RecordKind.LINKS) or type(kind_code) is not int:
        raise RecordError("malformed", f"unknown record kind {kind_code!r}")
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_BYTES:
        raise RecordError("malformed", "public key must be 32 bytes")
    for name, value in (("counter", counter), ("expiry", expiry)):
        if type(value) is not int or not 0 <= value <= MAX_COUNTER:
            raise RecordError("malformed", f"{name} must be a uint32")
    try:
        canonical = cbor2.dumps(list(fields), canonical=True)
    except Exception as exc:  # e.g. cyclic structures built with value-sharing tags
        raise RecordError("malformed", f"payload cannot be re-encoded: {exc}") from None
    if canonical != payload:
        raise RecordError("malformed", "payload is not deterministic CBOR")
    kind = RecordKind(kind_code)
    body: Card | Links | RecordError
    try:
        body = _body(kind, tuple(fields[4:]), payload)
    except RecordError as exc:
        body = exc
    return Envelope(kind, public_key, counter, expiry, body, payload, signature, public_key[:PEER_ID_BYTES])


#: What a record's payload may decode to: arrays, maps with text keys and these scalars.
_PLAIN_SCALARS: Final = frozenset({str, bytes, int, float, bool, type(None)})


def _check_plain(value: Any, size: int) -> None:
    """Raise ``RecordError('malformed')`` unless ``value`` is a tree of plain items, at most ``size``.

    Runs before the deterministic re-encode, which must never see anything else:
    cbor2 sorts map keys by their encoding, so maps nested as keys take time
    exponential in their depth (a 60-byte payload, hours), and value-sharing tags
    make a DAG whose re-encoding doubles with every level (a 200-byte payload,
    12 MB). No record holds either: its payload is arrays, maps with text keys,
    and scalars, each item at least one byte, so a tree of more items than the
    payload has bytes is shared (or cyclic) and is refused too.
    """
    stack = [value]
    budget = size
    plain = _PLAIN_SCALARS
    while stack:
        item = stack.pop()
        budget -= 1
        if budget < 0:
            raise RecordError("malformed", "payload shares values (more items than bytes)")
        kind = type(item)
        if kind is list:
            stack.extend(item)
        elif kind is dict:
            if not all(type(key) is str for key in item):
                raise RecordError("malformed", "payload has a map key that is not text")
            stack.extend(item.values())
        elif kind not in plain:
            raise RecordError("malformed", f"payload holds a {kind.__name__}, which no record holds")


def _text(value: Any, name: str, limit: int) -> str:
    if not isinstance(value, str) or len(value.encode("utf-8")) > limit:
        raise RecordError("malformed", f"{name} must be text of at most {limit} bytes")
    return value


def _body(kind: RecordKind, fields: tuple[Any, ...], payload: bytes) -> Card | Links:
    if kind is RecordKind.CARD:
        if len(fields) not in (4, 5):
            raise RecordError("malformed", "a card has 8 fields, or 9 with a certificate")
        name, os_name, version, metadata = fields[:4]
        certificate = fields[4] if len(fields) == 5 else b""
        if len(fields) == 5 and not (
            isinstance(certificate, bytes) and 0 < len(certificate) <= MAX_CERTIFICATE_BYTES
        ):
            raise RecordError(
                "malformed", f"a card's certificate is a byte string of 1..{MAX_CERTIFICATE_BYTES} bytes"
            )
        if not isinstance(metadata, dict):
            raise RecordError("malformed", "card metadata must be a map")
        try:
            check_metadata_value(metadata)
            # JSON is at most ~6x the CBOR of the same data (a control character in a
            # string: 1 byte vs "\u0000"), so only a large payload can exceed the limit.
            size = 0
            if len(payload) * _JSON_EXPANSION_BOUND > MAX_METADATA_JSON_BYTES:
                size = len(metadata_json(metadata).encode("utf-8"))
        except MetadataError as exc:
            raise RecordError("malformed", str(exc)) from None
        if size > MAX_METADATA_JSON_BYTES:
            raise RecordError(
                "malformed", f"metadata is {size} bytes as JSON; the limit is {MAX_METADATA_JSON_BYTES}"
            )
        return Card(
            _text(name, "device name", MAX_DEVICE_NAME_BYTES),
            # A fleet runs a few OS and agent versions: hold each string once, not once per peer.
            sys.intern(_text(os_name, "os", MAX_OS_BYTES)),
            sys.intern(_text(version, "agent version", MAX_AGENT_VERSION_BYTES)),
            freeze_metadata(metadata),
            certificate,
        )
    if len(fields) != 1 or not isinstance(fields[0], list | tuple):
        raise RecordError("malformed", "a links record has exactly 5 fields")
    raw_entries = fields[0]
    if len(raw_entries) > MAX_CONNECTIONS_PER_RECORD:
        raise RecordError("malformed", f"more than {MAX_CONNECTIONS_PER_RECORD} connections")
    entries = []
    for item in raw_entries:
        if not isinstance(item, bytes) or len(item) not in (PEER_ID_BYTES + 1, PEER_ID_BYTES + 3):
            raise RecordError("malformed", "a connection is peer_id(8) + type(1) + ?distance(2)")
        code = item[PEER_ID_BYTES]
        if code not in CONNECTION_TYPE_BY_CODE:
            raise RecordError("malformed", f"unknown connection type code {code}")
        distance = int.from_bytes(item[PEER_ID_BYTES + 1 :], "big") if len(item) > 9 else None
        entries.append(LinkEntry(item[:PEER_ID_BYTES], CONNECTION_TYPE_BY_CODE[code], distance))
    return Links(tuple(entries))


#: Encodings of the eight small-order Ed25519 points: a "signature" by such a key
#: can verify for any message, so no peer may use one (libsodium refuses them too).
SMALL_ORDER_KEYS: Final = frozenset(
    bytes.fromhex(h)
    for h in (
        "0100000000000000000000000000000000000000000000000000000000000000",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000080",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    )
)


def check_public_key(public_key: bytes) -> None:
    """Raise ``RecordError('malformed')`` unless this can be a peer's raw Ed25519 key.

    A key is 32 bytes and not one of :data:`SMALL_ORDER_KEYS`. (Neither OpenSSL nor
    this check decodes the point; libsodium's verify refuses the other degenerate
    encodings, as a bad signature.)
    """
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise RecordError("malformed", "not a valid Ed25519 public key")
    if public_key in SMALL_ORDER_KEYS:
        raise RecordError("malformed", "small-order Ed25519 public key")


def load_public_key(public_key: bytes) -> Ed25519PublicKey:
    """The key as a ``cryptography`` object, after :func:`check_public_key`."""
    check_public_key(public_key)
    try:
        return Ed25519PublicKey.from_public_bytes(public_key)
    except ValueError:
        raise RecordError("malformed", "not a valid Ed25519 public key") from None


def verify_record(env: Envelope, raw: bytes) -> Record:
    """Check the key, the signature and the body of a parsed record, in that order; return the Record.

    The signature is verified with the raw key in the envelope (libsodium, see
    :mod:`agent.core.ed25519`): no key object is loaded or cached.
    """
    kind, public_key, counter, expiry, body, payload, signature, pid = env  # one unpack, not a read each
    if public_key in SMALL_ORDER_KEYS:  # 32 bytes already: open_record checked
        raise RecordError("malformed", "small-order Ed25519 public key")
    cose.verify(public_key, payload, signature)
    if isinstance(body, RecordError):
        raise RecordError(body.reason, body.detail)
    return _new_record(kind, public_key, counter, expiry, body, raw, pid)


def decode_record(raw: bytes) -> Record:
    """Parse and verify a record in one step (expiry is the caller's to judge)."""
    return verify_record(open_record(raw), raw)
