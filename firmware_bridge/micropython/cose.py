"""COSE_Sign1 (RFC 9052 §4.2) with EdDSA, byte for byte as the host's agent/core/cose.py.

Every signed record is::

    D2                      tag 18 (COSE_Sign1)
    84                      array(4)
    43 A1 01 27             protected: bstr( {1: -8} )   alg = EdDSA
    A0                      unprotected: {}
    4L / 58 LL / 59 LLLL    payload: bstr head (shortest), then the payload
    58 40 <64 bytes>        the Ed25519 signature

and the signature is over the Sig_structure (RFC 9052 §4.4)::

    84 6A "Signature1" 43 A1 01 27 40 <bstr head> <payload>
    = ["Signature1", h'A10127', h'', payload]

``open_envelope`` checks that exact layout (no other header, no other algorithm, a
shortest payload head, a 64-byte signature and nothing after it, at most 4096 bytes)
and raises ``RecordError`` with reason ``oversized`` or ``malformed``; ``verify``
raises it with reason ``bad_signature``.
"""

import ed25519
from cbor import head

MAX_RECORD_BYTES = 4096
SIGNATURE_BYTES = 64
PROTECTED_HEADER = b"\xa1\x01\x27"
_SIG_STRUCTURE_PREFIX = b"\x84\x6aSignature1\x43\xa1\x01\x27\x40"
_ENVELOPE_PREFIX = b"\xd2\x84\x43\xa1\x01\x27\xa0"


class RecordError(ValueError):
    """A record refused, with the host's reason: ``malformed``, ``oversized`` or ``bad_signature``."""

    def __init__(self, reason, detail):
        super().__init__("%s: %s" % (reason, detail))
        self.reason = reason
        self.detail = detail


def sig_structure(payload):
    """The bytes Ed25519 signs for a COSE_Sign1 with our protected header."""
    return _SIG_STRUCTURE_PREFIX + head(2, len(payload)) + payload


def envelope(payload, signature):
    """The tagged COSE_Sign1 bytes around a payload and its signature."""
    return _ENVELOPE_PREFIX + head(2, len(payload)) + payload + head(2, len(signature)) + signature


def sign(key, payload):
    """Sign ``payload`` with an ``ed25519.SigningKey``; the full COSE_Sign1 bytes."""
    payload = bytes(payload)
    return envelope(payload, key.sign(sig_structure(payload)))


def open_envelope(raw):
    """(payload, signature) of COSE_Sign1 bytes in the exact layout above; no signature check."""
    raw = bytes(raw)
    if len(raw) > MAX_RECORD_BYTES:
        raise RecordError("oversized", "%d bytes exceeds the %d-byte limit" % (len(raw), MAX_RECORD_BYTES))
    if raw[: len(_ENVELOPE_PREFIX)] != _ENVELOPE_PREFIX:
        raise RecordError("malformed", "not a tagged COSE_Sign1 with alg EdDSA and no other headers")
    start = len(_ENVELOPE_PREFIX)
    first = raw[start] if len(raw) > start else -1
    if 0x40 <= first < 0x58:
        length, start = first - 0x40, start + 1
    elif first == 0x58 and len(raw) > start + 1 and raw[start + 1] >= 24:
        length, start = raw[start + 1], start + 2
    elif first == 0x59 and len(raw) > start + 2 and int.from_bytes(raw[start + 1 : start + 3], "big") >= 256:
        length, start = int.from_bytes(raw[start + 1 : start + 3], "big"), start + 3
    else:
        raise RecordError("malformed", "payload is not a deterministically encoded byte string")
    payload = raw[start : start + length]
    tail = raw[start + length :]
    if len(payload) != length or len(tail) != 2 + SIGNATURE_BYTES or tail[:2] != b"\x58\x40":
        raise RecordError("malformed", "expected a %d-byte signature and nothing after it" % SIGNATURE_BYTES)
    return payload, tail[2:]


def verify(public_key, payload, signature):
    """Raise RecordError('bad_signature') unless ``signature`` of ``payload`` by the raw key is valid."""
    if not ed25519.verify(public_key, sig_structure(payload), signature):
        raise RecordError("bad_signature", "signature does not verify")
