"""COSE_Sign1 (RFC 9052 §4.2) with EdDSA over Ed25519, in deterministic CBOR.

Layout of every signed record, byte for byte::

    D2                      tag 18 (COSE_Sign1)
    84                      array(4)
    43 A1 01 27             protected: bstr( {1: -8} )   alg = EdDSA
    A0                      unprotected: {}
    58 LL <payload>         payload: bstr (deterministic CBOR, see records.py)
    58 40 <64-byte sig>     Ed25519 signature over Sig_structure

Sig_structure = ["Signature1", h'A10127', h'', payload] (RFC 9052 §4.4), so any
conforming COSE library verifies a record given the peer's public key.
Only this exact protected header is accepted: a record signed with any other
algorithm is malformed here.
"""

from __future__ import annotations

from typing import Final

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.core.errors import RecordError
from agent.core.limits import MAX_RECORD_BYTES, SIGNATURE_BYTES

COSE_SIGN1_TAG: Final = 18
PROTECTED_HEADER: Final = b"\xa1\x01\x27"  # {1: -8}: alg EdDSA
_SIG_STRUCTURE_PREFIX: Final = b"\x84\x6aSignature1\x43\xa1\x01\x27\x40"


def _bstr_header(length: int) -> bytes:
    if length < 24:
        return bytes([0x40 | length])
    if length < 256:
        return bytes([0x58, length])
    if length < 65536:
        return b"\x59" + length.to_bytes(2, "big")
    return b"\x5a" + length.to_bytes(4, "big")


def sig_structure(payload: bytes) -> bytes:
    """The bytes Ed25519 signs for a COSE_Sign1 with our protected header."""
    return _SIG_STRUCTURE_PREFIX + _bstr_header(len(payload)) + payload


def envelope(payload: bytes, signature: bytes) -> bytes:
    """Assemble the tagged COSE_Sign1 bytes (deterministic encoding)."""
    return (
        b"\xd2\x84"
        + _bstr_header(len(PROTECTED_HEADER))
        + PROTECTED_HEADER
        + b"\xa0"
        + _bstr_header(len(payload))
        + payload
        + _bstr_header(len(signature))
        + signature
    )


def envelope_overhead(payload_len: int) -> int:
    """Bytes a COSE_Sign1 adds around a payload of this length."""
    return len(envelope(b"\x00" * payload_len, b"\x00" * SIGNATURE_BYTES)) - payload_len


def sign(private_key: Ed25519PrivateKey, payload: bytes) -> bytes:
    """Sign a payload; return the full COSE_Sign1 bytes."""
    return envelope(payload, private_key.sign(sig_structure(payload)))


def open_envelope(raw: bytes) -> tuple[bytes, bytes]:
    """Split COSE_Sign1 bytes into (payload, signature) without verifying.

    Raises :class:`RecordError` (``oversized`` or ``malformed``) on anything but
    the exact deterministic layout above.
    """
    if len(raw) > MAX_RECORD_BYTES:
        raise RecordError("oversized", f"{len(raw)} bytes exceeds the {MAX_RECORD_BYTES}-byte limit")
    try:
        item = cbor2.loads(raw)
    except Exception as exc:  # cbor2 raises several types for bad input
        raise RecordError("malformed", f"not CBOR: {exc}") from None
    if not isinstance(item, cbor2.CBORTag) or item.tag != COSE_SIGN1_TAG:
        raise RecordError("malformed", "not a tagged COSE_Sign1")
    value = item.value
    if not (isinstance(value, list | tuple) and len(value) == 4):
        raise RecordError("malformed", "COSE_Sign1 must be an array of 4")
    protected, unprotected, payload, signature = value
    if protected != PROTECTED_HEADER or unprotected != {}:
        raise RecordError("malformed", "unsupported COSE headers (only alg EdDSA is accepted)")
    if not isinstance(payload, bytes) or not isinstance(signature, bytes):
        raise RecordError("malformed", "payload and signature must be byte strings")
    if len(signature) != SIGNATURE_BYTES:
        raise RecordError("malformed", f"signature is {len(signature)} bytes, not {SIGNATURE_BYTES}")
    if envelope(payload, signature) != raw:
        raise RecordError("malformed", "not in deterministic encoding (or trailing bytes)")
    return payload, signature


def verify(public_key: Ed25519PublicKey, payload: bytes, signature: bytes) -> None:
    """Raise ``RecordError('bad_signature')`` unless the signature is valid."""
    try:
        public_key.verify(signature, sig_structure(payload))
    except InvalidSignature:
        raise RecordError("bad_signature", "signature does not verify") from None
