"""A peer's two signed records, card and links, exactly as agent/core/records.py builds them.

Payloads are deterministic CBOR arrays (see cbor.py), signed as COSE_Sign1 (cose.py)::

    card   [1, public_key(32), counter, expiry, device_name, os, agent_version, metadata, ?certificate]
    links  [2, public_key(32), counter, expiry, [connection, ...]]

* ``counter`` and ``expiry`` are uint32 (expiry in Unix seconds); the counter only
  grows and is shared by both kinds: the caller owns it (persist it on flash).
* ``device_name``, ``os`` and ``agent_version`` are cut to 64, 32 and 16 UTF-8 bytes
  (never inside a character), as the host's ``make_card`` cuts them.
* ``metadata`` is a JSON object as a CBOR map: text keys; values None, booleans,
  ints in -2**63 .. 2**64 - 1, strings, lists and objects, nested at most 16 levels;
  its compact JSON (sorted keys, UTF-8) at most 4096 bytes. ``{}`` (no metadata) is
  signed too. Floats are not supported on the node (see cbor.py).
* each connection is one byte string: the neighbour's 8-byte peer id, one byte of
  connection type (Bluetooth 1, AccessPoint 2, P2PWiFi 3, WebSocket 4, Radio 5),
  then, only when measured, the distance in decimetres as a big-endian uint16,
  clamped to 0 .. 65535 (6553.5 m). At most 64 connections.
* ``certificate``, only on a fleet member's card: the fleet CA's certificate for this key, as
  ``presence-agent fleet-ca issue`` wrote it (a byte string of 1..4096 bytes, carried as it is:
  the routers judge it, docs/THREAT_MODEL.md).
* a signed record is at most 4096 bytes.

Signing: ``sign_card(key, counter, expiry, name, os, version, metadata, certificate=b"")`` and
``sign_links(key, counter, expiry, [(peer_id, type, distance_dm or None), ...])``
with an ``ed25519.SigningKey``; both return the COSE_Sign1 bytes and raise
``ValueError`` (``MetadataError`` for metadata) for what a receiver would refuse.
Receiving: ``decode_record(raw)`` parses, then checks the key, the signature and the
body in that order (as the host does) and returns a ``Record``, or raises
``RecordError`` (``malformed``, ``oversized``, ``bad_signature``). Expiry is the
caller's to judge.
"""

import cbor
import cose
from cose import MAX_RECORD_BYTES, RecordError

CARD = 1
LINKS = 2
PUBLIC_KEY_BYTES = 32
PEER_ID_BYTES = 8
MAX_COUNTER = 2**32 - 1
MAX_DEVICE_NAME_BYTES = 64
MAX_OS_BYTES = 32
MAX_AGENT_VERSION_BYTES = 16
MAX_METADATA_JSON_BYTES = 4096
MAX_METADATA_DEPTH = 16
MAX_CONNECTIONS_PER_RECORD = 64
MAX_DISTANCE_DM = 65535
MAX_CERTIFICATE_BYTES = MAX_RECORD_BYTES

#: Wire codes of connection types, keyed by the host's spellings. Never renumber.
CONNECTION_TYPES = {"Bluetooth": 1, "AccessPoint": 2, "P2PWiFi": 3, "WebSocket": 4, "Radio": 5}
_CODES = (1, 2, 3, 4, 5)

#: Ed25519 keys of small order: a signature by one verifies for any message; refused as malformed.
SMALL_ORDER_KEYS = tuple(
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


class MetadataError(ValueError):
    """Metadata a receiver would refuse (not JSON data, too deep, too large)."""


# ---------------------------------------------------------------- metadata


def check_metadata(value, depth=0):
    """Raise MetadataError unless ``value`` is metadata data (see the module docstring)."""
    if depth > MAX_METADATA_DEPTH:
        raise MetadataError("metadata nests deeper than %d levels" % MAX_METADATA_DEPTH)
    if value is None or value is True or value is False or isinstance(value, str):
        return
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise MetadataError("metadata integer %d does not fit 64 bits" % value)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise MetadataError("metadata keys must be strings, got %s" % type(key).__name__)
            check_metadata(item, depth + 1)
        return
    if isinstance(value, (list, tuple)):
        for item in value:
            check_metadata(item, depth + 1)
        return
    if isinstance(value, float):
        raise MetadataError("metadata floats are not supported on the node (use an int or a string)")
    raise MetadataError("metadata values must be JSON data, got %s" % type(value).__name__)


def _json_text_size(text):
    size = 2
    for b in text.encode("utf-8"):
        if b == 0x22 or b == 0x5C or b in (8, 9, 10, 12, 13):
            size += 2
        elif b < 0x20:
            size += 6  # \u00XX
        else:
            size += 1
    return size


def metadata_json_size(value):
    """Bytes of the host's canonical compact JSON of checked metadata (``metadata_json``)."""
    if value is None or value is True:
        return 4
    if value is False:
        return 5
    if isinstance(value, str):
        return _json_text_size(value)
    if isinstance(value, int):
        return len(str(value))
    if isinstance(value, dict):
        size = 1 + len(value)  # braces and commas (n - 1), plus one colon each: 2 + (n-1) + n - n
        for key, item in value.items():
            size += _json_text_size(key) + 1 + metadata_json_size(item)
        return size if value else 2
    return 1 + len(value) + sum(metadata_json_size(item) for item in value) if value else 2


def _check_metadata_object(metadata):
    if not isinstance(metadata, dict):
        raise MetadataError("metadata must be a JSON object, got %s" % type(metadata).__name__)
    check_metadata(metadata)
    size = metadata_json_size(metadata)
    if size > MAX_METADATA_JSON_BYTES:
        raise MetadataError("metadata is %d bytes as JSON; the limit is %d" % (size, MAX_METADATA_JSON_BYTES))


# ---------------------------------------------------------------- encoding


def cut(text, limit):
    """``text`` cut to at most ``limit`` UTF-8 bytes, never inside a character."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    end = limit
    while end > 0 and data[end] & 0xC0 == 0x80:
        end -= 1
    return data[:end].decode("utf-8")


def _uint32(name, value):
    if not isinstance(value, int) or value is True or value is False or not 0 <= value <= MAX_COUNTER:
        raise ValueError("%s %r outside 0..%d" % (name, value, MAX_COUNTER))


def _check_certificate(certificate):
    if not isinstance(certificate, bytes) or len(certificate) > MAX_CERTIFICATE_BYTES:
        raise ValueError("a certificate is a byte string of at most %d bytes" % MAX_CERTIFICATE_BYTES)


def card_payload(public_key, counter, expiry, device_name, os, agent_version, metadata, certificate=b""):
    """The card's payload bytes (strings cut to their limits; metadata checked)."""
    _uint32("counter", counter)
    _uint32("expiry", expiry)
    _check_metadata_object(metadata)
    _check_certificate(certificate)
    fields = [
        CARD,
        bytes(public_key),
        counter,
        expiry,
        cut(device_name, MAX_DEVICE_NAME_BYTES),
        cut(os, MAX_OS_BYTES),
        cut(agent_version, MAX_AGENT_VERSION_BYTES),
        metadata,
    ]
    if certificate:
        fields.append(certificate)
    return cbor.encode(fields)


def connection(peer_id, connection_type, distance_dm=None):
    """One connection's bytes: peer id(8), type code(1), then the clamped distance(2) if measured."""
    peer_id = bytes(peer_id)
    if len(peer_id) != PEER_ID_BYTES:
        raise ValueError("a peer id is %d bytes, got %d" % (PEER_ID_BYTES, len(peer_id)))
    code = CONNECTION_TYPES.get(connection_type, connection_type)
    if code not in _CODES or code is True:
        raise ValueError("unknown connection type %r" % (connection_type,))
    entry = peer_id + bytes((code,))
    if distance_dm is None:
        return entry
    return entry + max(0, min(int(distance_dm), MAX_DISTANCE_DM)).to_bytes(2, "big")


def links_payload(public_key, counter, expiry, links):
    """The links payload; ``links`` is a list of (peer_id, type name or code, distance_dm or None)."""
    _uint32("counter", counter)
    _uint32("expiry", expiry)
    if len(links) > MAX_CONNECTIONS_PER_RECORD:
        raise ValueError("at most %d connections per record" % MAX_CONNECTIONS_PER_RECORD)
    entries = [connection(*link) for link in links]
    return cbor.encode([LINKS, bytes(public_key), counter, expiry, entries])


def _signed(key, payload):
    raw = cose.sign(key, payload)
    if len(raw) > MAX_RECORD_BYTES:
        raise RecordError("oversized", "signed record would be %d bytes" % len(raw))
    return raw


def sign_card(key, counter, expiry, device_name, os, agent_version, metadata=None, certificate=b""):
    """The signed card (COSE_Sign1 bytes) of ``key`` (an ``ed25519.SigningKey``)."""
    if metadata is None:
        metadata = {}
    payload = card_payload(
        key.public_key, counter, expiry, device_name, os, agent_version, metadata, certificate
    )
    return _signed(key, payload)


def sign_links(key, counter, expiry, links):
    """The signed links record (COSE_Sign1 bytes) of ``key``."""
    return _signed(key, links_payload(key.public_key, counter, expiry, links))


# ---------------------------------------------------------------- decoding


class Card:
    """A card's body: ``device_name``, ``os``, ``agent_version``, ``metadata`` (a dict) and
    ``certificate`` (``b""``: none)."""

    def __init__(self, device_name, os, agent_version, metadata, certificate=b""):
        self.device_name = device_name
        self.os = os
        self.agent_version = agent_version
        self.metadata = metadata
        self.certificate = certificate


class Record:
    """A parsed record: ``kind`` (CARD or LINKS), ``public_key``, ``counter``, ``expiry``,
    ``body`` (a Card, or a list of (peer_id, type code, distance_dm or None)), ``payload``,
    ``signature`` and the ``raw`` bytes. ``verified`` is True once ``verify_record`` passed.
    """

    def __init__(self, kind, public_key, counter, expiry, body, payload, signature, raw):
        self.kind = kind
        self.public_key = public_key
        self.counter = counter
        self.expiry = expiry
        self.body = body  # or the RecordError verify_record raises for it
        self.payload = payload
        self.signature = signature
        self.raw = raw
        self.verified = False


def _text(value, name, limit):
    if not isinstance(value, str) or len(value.encode("utf-8")) > limit:
        raise RecordError("malformed", "%s must be text of at most %d bytes" % (name, limit))
    return value


def _card_body(fields):
    if len(fields) not in (4, 5):
        raise RecordError("malformed", "a card has 8 fields, or 9 with a certificate")
    name, os_name, version, metadata = fields[:4]
    certificate = fields[4] if len(fields) == 5 else b""
    if len(fields) == 5 and not (
        isinstance(certificate, bytes) and 0 < len(certificate) <= MAX_CERTIFICATE_BYTES
    ):
        raise RecordError(
            "malformed", "a card's certificate is a byte string of 1..%d bytes" % MAX_CERTIFICATE_BYTES
        )
    if not isinstance(metadata, dict):
        raise RecordError("malformed", "card metadata must be a map")
    try:
        _check_metadata_object(metadata)
    except MetadataError as exc:
        raise RecordError("malformed", str(exc)) from None
    return Card(
        _text(name, "device name", MAX_DEVICE_NAME_BYTES),
        _text(os_name, "os", MAX_OS_BYTES),
        _text(version, "agent version", MAX_AGENT_VERSION_BYTES),
        metadata,
        certificate,
    )


def _links_body(fields):
    if len(fields) != 1 or not isinstance(fields[0], list):
        raise RecordError("malformed", "a links record has exactly 5 fields")
    if len(fields[0]) > MAX_CONNECTIONS_PER_RECORD:
        raise RecordError("malformed", "more than %d connections" % MAX_CONNECTIONS_PER_RECORD)
    entries = []
    for item in fields[0]:
        if not isinstance(item, bytes) or len(item) not in (PEER_ID_BYTES + 1, PEER_ID_BYTES + 3):
            raise RecordError("malformed", "a connection is peer_id(8) + type(1) + ?distance(2)")
        code = item[PEER_ID_BYTES]
        if code not in _CODES:
            raise RecordError("malformed", "unknown connection type code %d" % code)
        distance = int.from_bytes(item[PEER_ID_BYTES + 1 :], "big") if len(item) > 9 else None
        entries.append((item[:PEER_ID_BYTES], code, distance))
    return entries


def open_record(raw):
    """Parse a record's structure without checking its signature; raises RecordError.

    A fault in the body (a bad name, metadata, connection) is kept in ``body`` and
    raised by ``verify_record`` after the signature, as the host judges it last.
    """
    payload, signature = cose.open_envelope(raw)
    try:
        fields = cbor.decode(payload)
    except cbor.CBORError as exc:
        raise RecordError("malformed", "payload is not deterministic CBOR: %s" % exc) from None
    if not isinstance(fields, list) or len(fields) < 4:
        raise RecordError("malformed", "payload must be an array of at least 4 items")
    kind, public_key, counter, expiry = fields[:4]
    if kind is True or kind not in (CARD, LINKS):
        raise RecordError("malformed", "unknown record kind %r" % (kind,))
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_BYTES:
        raise RecordError("malformed", "public key must be 32 bytes")
    for name, value in (("counter", counter), ("expiry", expiry)):
        if not isinstance(value, int) or value is True or value is False or not 0 <= value <= MAX_COUNTER:
            raise RecordError("malformed", "%s must be a uint32" % name)
    try:
        body = _card_body(fields[4:]) if kind == CARD else _links_body(fields[4:])
    except RecordError as exc:
        body = exc
    return Record(kind, public_key, counter, expiry, body, payload, signature, bytes(raw))


def verify_record(record):
    """Check the key, the signature, then the body; return the record (``verified`` set)."""
    if record.public_key in SMALL_ORDER_KEYS:
        raise RecordError("malformed", "small-order Ed25519 public key")
    cose.verify(record.public_key, record.payload, record.signature)
    if isinstance(record.body, RecordError):
        raise record.body
    record.verified = True
    return record


def decode_record(raw):
    """Parse and verify a record in one step."""
    return verify_record(open_record(raw))
