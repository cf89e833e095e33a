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
algorithm is malformed here. Signing uses ``cryptography`` (OpenSSL); verifying
uses :mod:`agent.core.ed25519` (libsodium), the faster of the two, on the raw
32-byte key carried in the payload.
"""

from __future__ import annotations

from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core import ed25519
from agent.core.errors import RecordError
from agent.core.limits import MAX_RECORD_BYTES, SIGNATURE_BYTES

PROTECTED_HEADER: Final = b"\xa1\x01\x27"  # {1: -8}: alg EdDSA
_SIG_STRUCTURE_PREFIX: Final = b"\x84\x6aSignature1\x43\xa1\x01\x27\x40"
#: Tag 18, array(4), protected bstr({1: -8}), unprotected {}: every record starts so.
_ENVELOPE_PREFIX: Final = b"\xd2\x84\x43\xa1\x01\x27\xa0"


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
    the exact deterministic layout above. The layout is fixed, so it is checked
    byte for byte rather than decoded: this runs for every record received.
    """
    size = len(raw)
    if size > MAX_RECORD_BYTES:
        raise RecordError("oversized", f"{size} bytes exceeds the {MAX_RECORD_BYTES}-byte limit")
    if not raw.startswith(_ENVELOPE_PREFIX):
        raise RecordError("malformed", "not a tagged COSE_Sign1 with alg EdDSA and no other headers")
    # The payload's bstr head at offset 7, most common form first (24..255 bytes: 58 LL).
    head = raw[7] if size > 7 else -1
    if head == 0x58 and size > 8 and raw[8] >= 24:
        start, end = 9, 9 + raw[8]
    elif 0x40 <= head < 0x58:
        start, end = 8, head - 0x38  # 8 + (head - 0x40)
    elif head == 0x59 and size > 9 and (length := int.from_bytes(raw[8:10], "big")) >= 256:
        start, end = 10, 10 + length
    else:
        raise RecordError("malformed", "payload is not a deterministically encoded byte string")
    if size != end + 2 + SIGNATURE_BYTES or raw[end] != 0x58 or raw[end + 1] != SIGNATURE_BYTES:  # 58 40
        raise RecordError("malformed", f"expected a {SIGNATURE_BYTES}-byte signature and nothing after it")
    return raw[start:end], raw[end + 2 :]


#: Sig_structure up to its payload, for every payload shorter than 256 bytes (most records): 256
#: short strings (about 12 KB) built once, so that verifying builds the signed bytes in one step.
_SIGNED_HEADS: Final = tuple(_SIG_STRUCTURE_PREFIX + _bstr_header(n) for n in range(256))


def verify(public_key: bytes, payload: bytes, signature: bytes) -> None:
    """Raise ``RecordError('bad_signature')`` unless ``signature`` by the raw 32-byte key is valid.

    The verifier takes ``signature ‖ Sig_structure`` in one string.
    """
    size = len(payload)
    head = _SIGNED_HEADS[size] if size < 256 else _SIG_STRUCTURE_PREFIX + _bstr_header(size)
    if len(signature) != SIGNATURE_BYTES or not ed25519.verify_signed(public_key, signature + head + payload):
        raise RecordError("bad_signature", "signature does not verify")
