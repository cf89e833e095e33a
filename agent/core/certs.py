"""Fleet trust: device certificates and revocation lists signed by a fleet CA.

A fleet CA is an offline Ed25519 key. It signs two record kinds, each a
COSE_Sign1 in exactly the layout of :mod:`agent.core.cose` (tag 18, protected
``{1: -8}``, no unprotected headers, Ed25519 over the Sig_structure), so any
conforming COSE library verifies them given the CA's public key. Payloads are
RFC 8949 §4.2 deterministic CBOR arrays; a decoder re-encodes what it read and
refuses any difference, so each has exactly one byte string:

* a **certificate** binds a device's peer key to identity metadata::

      [3, ca_key_id bstr(8), serial uint32, device_key bstr(32),
       issued_at uint32 (Unix s), expiry uint32 (Unix s), metadata map]

* a **revocation list** names the serials the CA has withdrawn::

      [4, ca_key_id bstr(8), counter uint32, issued_at uint32 (Unix s),
       [serial uint32, ...]]        (strictly ascending, at most 512)

The kind codes 3 and 4 continue the record kinds (1 card, 2 links): a
certificate is never mistaken for a card (``records.open_record`` refuses kind
3 as ``malformed``) and a card is never mistaken for a certificate.
``ca_key_id`` is the CA public key's first 8 bytes (like a peer id); the
verifier looks the CA up by it among the keys it trusts (at most two: the old
and the new during a rotation). ``serial`` is unique per CA, never reused.
``metadata`` follows the card's rules (a JSON object as a CBOR map, ≤ 16
levels, ≤ 4096 bytes as compact JSON; :func:`agent.core.records.validate_metadata`),
and the whole signed certificate is ≤ 4096 bytes. A revocation list's
``counter`` only grows per CA: the newest list wins, an older one is ``stale``.

Checks run cheapest first and judge the body only after the signature, as
records do (docs/ARCHITECTURE.md §3): structure (``malformed``), the CA
(``unknown_ca``), the signature (``bad_signature``), the body (``malformed``),
the key (``wrong_key``), the validity window (``not_yet_valid``, ``expired``),
revocation (``revoked``). A certificate is valid from ``issued_at`` minus
:data:`~agent.core.limits.CERTIFICATE_CLOCK_SKEW` (five minutes) until
``expiry`` (exclusive, as for records: expiry ≤ now is expired).
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core import cose
from agent.core.errors import MetadataError, MetadataTooLargeError, PresenceError, RecordError
from agent.core.keys import peer_key_string
from agent.core.limits import (
    CA_KEY_ID_BYTES,
    CERTIFICATE_CLOCK_SKEW,
    MAX_CERTIFICATE_BYTES,
    MAX_COUNTER,
    MAX_METADATA_JSON_BYTES,
    MAX_REVOCATION_LIST_BYTES,
    MAX_REVOKED_SERIALS,
    MAX_TRUSTED_CA_KEYS,
    PUBLIC_KEY_BYTES,
)
from agent.core.records import (
    SMALL_ORDER_KEYS,
    Metadata,
    check_metadata_value,
    freeze_metadata,
    metadata_json,
    thaw_metadata,
    validate_metadata,
)

#: Payload kind codes, continuing the record kinds (1 card, 2 links). Never renumber.
CERTIFICATE_KIND: Final = 3
REVOCATION_LIST_KIND: Final = 4


class TrustReason(enum.StrEnum):
    """Why a certificate or revocation list was refused (the engine counts these by name)."""

    #: A card without a certificate reached a peer with trust on (or no certified card is held
    #: for the key a links record names).
    NO_CERTIFICATE = "no_certificate"
    MALFORMED = "malformed"
    UNKNOWN_CA = "unknown_ca"
    BAD_SIGNATURE = "bad_signature"
    WRONG_KEY = "wrong_key"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    REVOKED = "revoked"
    #: A revocation list whose counter is not above the one already held (a replay).
    STALE = "stale"


class CertificateError(PresenceError, ValueError):
    """A certificate or revocation list was refused; ``reason`` says why."""

    def __init__(self, reason: TrustReason | str, detail: str) -> None:
        self.reason = TrustReason(reason)
        self.detail = detail
        super().__init__(f"certificate refused ({self.reason}): {detail}")


@dataclass(frozen=True, slots=True)
class Certificate:
    """A verified device certificate and the exact bytes it arrived as."""

    ca_key_id: bytes
    serial: int
    device_key: bytes
    issued_at: int
    expiry: int
    metadata: Metadata  # read-only mapping
    raw: bytes = field(repr=False)

    @property
    def device_key_string(self) -> str:
        return peer_key_string(self.device_key)


@dataclass(frozen=True, slots=True)
class RevocationList:
    """A verified revocation list: the serials one CA has withdrawn, as of ``counter``."""

    ca_key_id: bytes
    counter: int
    issued_at: int
    serials: frozenset[int]
    raw: bytes = field(repr=False)


def ca_key_id(ca_public_key: bytes) -> bytes:
    """How certificates name their CA: the first 8 bytes of its raw public key."""
    return ca_public_key[:CA_KEY_ID_BYTES]


def raw_public_key(private_key: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public half of a private key."""
    return private_key.public_key().public_bytes_raw()


# ---------------------------------------------------------------- trusted keys


def trusted_ca_table(ca_keys: Iterable[bytes]) -> Mapping[bytes, bytes]:
    """Key id -> raw key for the trusted CA keys; ``ValueError`` for a bad or excess key (a config error)."""
    table: dict[bytes, bytes] = {}
    for key in ca_keys:
        if len(key) != PUBLIC_KEY_BYTES or key in SMALL_ORDER_KEYS:
            raise ValueError("a trusted CA key is a valid 32-byte Ed25519 public key")
        if table.get(ca_key_id(key), key) != key:
            raise ValueError("two trusted CA keys share a key id")
        table[ca_key_id(key)] = key
    if len(table) > MAX_TRUSTED_CA_KEYS:
        raise ValueError(f"at most {MAX_TRUSTED_CA_KEYS} CA keys are trusted at once")
    return MappingProxyType(table)


# ---------------------------------------------------------------- signing


def _uint32(name: str, value: int) -> None:
    if type(value) is not int or not 0 <= value <= MAX_COUNTER:
        raise ValueError(f"{name} {value!r} outside 0..{MAX_COUNTER}")


def certificate_payload(
    ca_id: bytes, serial: int, device_key: bytes, issued_at: int, expiry: int, metadata: Metadata
) -> bytes:
    return cbor2.dumps(
        [CERTIFICATE_KIND, ca_id, serial, device_key, issued_at, expiry, thaw_metadata(metadata)],
        canonical=True,
    )


def revocation_payload(ca_id: bytes, counter: int, issued_at: int, serials: Iterable[int]) -> bytes:
    return cbor2.dumps(
        [REVOCATION_LIST_KIND, ca_id, counter, issued_at, sorted(set(serials))], canonical=True
    )


def issue_certificate(
    ca_private_key: Ed25519PrivateKey,
    serial: int,
    device_key: bytes,
    metadata: Metadata,
    issued_at: int,
    expiry: int,
) -> Certificate:
    """Sign a certificate. The caller owns serial allocation and the clock.

    Raises ``ValueError`` for a bad serial, key or validity window,
    :class:`MetadataError` for metadata a card could not carry, and
    :class:`MetadataTooLargeError` if the signed certificate would exceed 4096 bytes.
    """
    for name, value in (("serial", serial), ("issued_at", issued_at), ("expiry", expiry)):
        _uint32(name, value)
    if expiry <= issued_at:
        raise ValueError("a certificate's expiry must be after its issued-at time")
    if len(device_key) != PUBLIC_KEY_BYTES or device_key in SMALL_ORDER_KEYS:
        raise ValueError("the device key is not a valid 32-byte Ed25519 public key")
    checked = validate_metadata(metadata)
    ca_public = raw_public_key(ca_private_key)
    raw = cose.sign(
        ca_private_key,
        certificate_payload(ca_key_id(ca_public), serial, device_key, issued_at, expiry, checked),
    )
    if len(raw) > MAX_CERTIFICATE_BYTES:
        raise MetadataTooLargeError(
            "the signed certificate with this metadata", len(raw), MAX_CERTIFICATE_BYTES
        )
    # Never issue what a verifier would refuse.
    return verify_certificate(raw, [ca_public], (), issued_at)


def sign_revocation_list(
    ca_private_key: Ed25519PrivateKey, counter: int, issued_at: int, serials: Iterable[int]
) -> RevocationList:
    """Sign a revocation list. The caller owns the counter (it must only grow)."""
    _uint32("counter", counter)
    _uint32("issued_at", issued_at)
    unique = set(serials)
    for serial in unique:
        _uint32("serial", serial)
    if len(unique) > MAX_REVOKED_SERIALS:
        raise ValueError(f"a revocation list names at most {MAX_REVOKED_SERIALS} serials")
    ca_public = raw_public_key(ca_private_key)
    raw = cose.sign(ca_private_key, revocation_payload(ca_key_id(ca_public), counter, issued_at, unique))
    return verify_revocation_list(raw, [ca_public])


# ---------------------------------------------------------------- verifying


def _open(raw: bytes, kind: int, limit: int, what: str, fields: int) -> tuple[list[Any], bytes, bytes]:
    """Envelope and deterministic payload of a CA record of this kind: (fields, payload, signature)."""
    if len(raw) > limit:
        raise CertificateError(TrustReason.MALFORMED, f"{len(raw)} bytes exceeds the {limit}-byte limit")
    try:
        payload, signature = cose.open_envelope(raw)
    except RecordError as exc:
        raise CertificateError(TrustReason.MALFORMED, exc.detail) from None
    try:
        value = cbor2.loads(payload)
        canonical = cbor2.dumps(value, canonical=True)
    except Exception as exc:  # cbor2 raises many types on hostile input
        raise CertificateError(TrustReason.MALFORMED, f"payload is not CBOR: {exc}") from None
    if canonical != payload:
        raise CertificateError(TrustReason.MALFORMED, "payload is not deterministic CBOR")
    if not isinstance(value, list) or len(value) != fields:
        raise CertificateError(TrustReason.MALFORMED, f"{what} must be an array of {fields} items")
    if type(value[0]) is not int or value[0] != kind:
        raise CertificateError(TrustReason.MALFORMED, f"not {what} (kind {value[0]!r})")
    if not isinstance(value[1], bytes) or len(value[1]) != CA_KEY_ID_BYTES:
        raise CertificateError(TrustReason.MALFORMED, f"the CA key id must be {CA_KEY_ID_BYTES} bytes")
    return value, payload, signature


def _ca_key(trusted: Mapping[bytes, bytes], ca_id: bytes) -> bytes:
    ca_key = trusted.get(ca_id)
    if ca_key is None:
        raise CertificateError(TrustReason.UNKNOWN_CA, f"signed by CA {ca_id.hex()}, which is not trusted")
    return ca_key


def _check_signature(trusted: Mapping[bytes, bytes], ca_id: bytes, payload: bytes, signature: bytes) -> None:
    ca_key = _ca_key(trusted, ca_id)
    try:
        cose.verify(ca_key, payload, signature)
    except RecordError:
        raise CertificateError(TrustReason.BAD_SIGNATURE, "the CA signature does not verify") from None


def _is_uint32(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_COUNTER


def _open_certificate(raw: bytes) -> tuple[list[Any], bytes, bytes]:
    return _open(raw, CERTIFICATE_KIND, MAX_CERTIFICATE_BYTES, "a certificate", 7)


def _certificate(fields: list[Any], raw: bytes) -> Certificate:
    """The certificate a well-formed envelope holds; ``malformed`` for a bad body."""
    _, ca_id, serial, key, issued_at, expiry, metadata = fields
    if not all(_is_uint32(v) for v in (serial, issued_at, expiry)):
        raise CertificateError(TrustReason.MALFORMED, "serial, issued-at and expiry must be uint32")
    if not isinstance(key, bytes) or len(key) != PUBLIC_KEY_BYTES or key in SMALL_ORDER_KEYS:
        raise CertificateError(TrustReason.MALFORMED, "the device key is not a valid 32-byte Ed25519 key")
    if not isinstance(metadata, dict):
        raise CertificateError(TrustReason.MALFORMED, "certificate metadata must be a map")
    try:
        check_metadata_value(metadata)
        size = len(metadata_json(metadata).encode("utf-8"))
    except MetadataError as exc:
        raise CertificateError(TrustReason.MALFORMED, str(exc)) from None
    if size > MAX_METADATA_JSON_BYTES:
        raise CertificateError(TrustReason.MALFORMED, f"metadata is {size} bytes as JSON")
    return Certificate(ca_id, serial, key, issued_at, expiry, freeze_metadata(metadata), raw)


def _table(trusted_ca_keys: Iterable[bytes]) -> Mapping[bytes, bytes]:
    return trusted_ca_keys if isinstance(trusted_ca_keys, Mapping) else trusted_ca_table(trusted_ca_keys)


def open_certificate(raw: bytes, trusted_ca_keys: Iterable[bytes]) -> Certificate:
    """A well-formed certificate signed by a trusted CA; its key, validity window and revocation not judged.

    For listing what a CA issued; a fleet member uses :func:`verify_certificate`.
    The signature is checked before the body is judged: a forgery with a bad body
    is ``bad_signature``, as for records.
    """
    fields, payload, signature = _open_certificate(raw)
    _check_signature(_table(trusted_ca_keys), fields[1], payload, signature)
    return _certificate(fields, raw)


def judge_certificate(
    cert: Certificate, revoked: Iterable[RevocationList], now: int, device_key: bytes | None = None
) -> Certificate:
    """The checks of a certificate that depend on who shows it and when: its key, its validity
    window and the revocation lists held. Raises :class:`CertificateError`; returns ``cert``."""
    if device_key is not None and cert.device_key != device_key:
        raise CertificateError(TrustReason.WRONG_KEY, "the certificate is for another device key")
    if now < cert.issued_at - CERTIFICATE_CLOCK_SKEW:
        raise CertificateError(TrustReason.NOT_YET_VALID, f"valid from {cert.issued_at}, it is {now}")
    if cert.expiry <= now:
        raise CertificateError(TrustReason.EXPIRED, f"expired at {cert.expiry}, it is {now}")
    for revocations in revoked:
        if revocations.ca_key_id == cert.ca_key_id and cert.serial in revocations.serials:
            raise CertificateError(
                TrustReason.REVOKED, f"serial {cert.serial} is revoked (list {revocations.counter})"
            )
    return cert


def verify_certificate(
    raw: bytes,
    trusted_ca_keys: Iterable[bytes],
    revoked: Iterable[RevocationList],
    now: int,
    device_key: bytes | None = None,
) -> Certificate:
    """Check a certificate; return it, or raise :class:`CertificateError` with the first reason that applies.

    ``trusted_ca_keys``: the raw CA public keys trusted (at most two, see
    :func:`trusted_ca_table`). ``revoked``: the verified revocation lists held
    (a certificate is revoked if a list of its own CA names its serial).
    ``now``: the wall clock, Unix seconds. ``device_key``: if given, the key the
    peer proved in the handshake; a certificate for another key is ``wrong_key``.
    """
    return judge_certificate(open_certificate(raw, trusted_ca_keys), revoked, now, device_key)


def precheck_certificate(
    raw: bytes,
    trusted_ca_keys: Iterable[bytes],
    revoked: Iterable[RevocationList],
    now: int,
    device_key: bytes | None = None,
) -> Certificate:
    """Every check of :func:`verify_certificate` but the CA signature: what refuses a flood of
    uncertified records for the price of a CBOR decode. What it returns is NOT verified."""
    fields, _, _ = _open_certificate(raw)
    _ca_key(_table(trusted_ca_keys), fields[1])
    return judge_certificate(_certificate(fields, raw), revoked, now, device_key)


def verify_revocation_list(
    raw: bytes, trusted_ca_keys: Iterable[bytes], held: Mapping[bytes, RevocationList] | None = None
) -> RevocationList:
    """Check a revocation list; return it, or raise :class:`CertificateError`.

    ``held``: the newest list held per CA key id; a list whose counter is not
    above its CA's held one is ``stale`` (a replay, or a copy already held).
    """
    trusted = _table(trusted_ca_keys)
    fields, payload, signature = _open(
        raw, REVOCATION_LIST_KIND, MAX_REVOCATION_LIST_BYTES, "a revocation list", 5
    )
    _, ca_id, counter, issued_at, serials = fields
    _check_signature(trusted, ca_id, payload, signature)
    if not _is_uint32(counter) or not _is_uint32(issued_at):
        raise CertificateError(TrustReason.MALFORMED, "counter and issued-at must be uint32")
    if (
        not isinstance(serials, list)
        or len(serials) > MAX_REVOKED_SERIALS
        or not all(_is_uint32(s) for s in serials)
        or any(a >= b for a, b in itertools.pairwise(serials))
    ):
        raise CertificateError(
            TrustReason.MALFORMED, f"serials must be at most {MAX_REVOKED_SERIALS} ascending uint32"
        )
    current = None if held is None else held.get(ca_id)
    if current is not None and counter <= current.counter:
        raise CertificateError(
            TrustReason.STALE, f"list {counter} is not newer than the held list {current.counter}"
        )
    return RevocationList(ca_id, counter, issued_at, frozenset(serials), raw)


def is_revocation_list(raw: bytes) -> bool:
    """Whether ``raw`` is shaped as a revocation list (COSE_Sign1 around ``[4, ...]``): a byte
    check, no decode, so the engine tells lists from records on RECORDS for nothing."""
    try:
        payload, _ = cose.open_envelope(raw)
    except RecordError:
        return False
    return payload[:2] == _REVOCATION_PREFIX


#: A revocation list's payload starts so: array(5), kind 4.
_REVOCATION_PREFIX: Final = bytes([0x85, REVOCATION_LIST_KIND])


# ---------------------------------------------------------------- the trust a fleet member holds


@dataclass(frozen=True, slots=True)
class FleetTrust:
    """The CA keys a fleet member trusts and the newest revocation list of each CA.

    A value: :meth:`with_revocation_list` returns a new one, nothing mutates.

    What the engine holds with trust on (:mod:`agent.core.trust`): ``precheck`` and
    ``verify`` for a card's certificate, ``judge`` to re-check held ones,
    ``with_revocation_list`` for a list received (newest wins).
    """

    ca_keys: Mapping[bytes, bytes]  # key id -> raw key, from trusted_ca_table
    revocations: Mapping[bytes, RevocationList] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def of(cls, ca_keys: Iterable[bytes]) -> FleetTrust:
        return cls(trusted_ca_table(ca_keys))

    def verify(self, raw: bytes, now: int, device_key: bytes | None = None) -> Certificate:
        return verify_certificate(raw, self.ca_keys, self.revocations.values(), now, device_key)

    def precheck(self, raw: bytes, now: int, device_key: bytes | None = None) -> Certificate:
        """:func:`precheck_certificate`: everything but the CA signature (the result is NOT verified)."""
        return precheck_certificate(raw, self.ca_keys, self.revocations.values(), now, device_key)

    def judge(self, cert: Certificate, now: int) -> Certificate:
        """Re-judge a certificate verified earlier: still valid now, not revoked by the lists held now."""
        return judge_certificate(cert, self.revocations.values(), now)

    def with_revocation_list(self, raw: bytes) -> tuple[FleetTrust, RevocationList]:
        """The trust with this list in place of its CA's older one; :class:`CertificateError` if refused."""
        revocations = verify_revocation_list(raw, self.ca_keys, self.revocations)
        held = dict(self.revocations)
        held[revocations.ca_key_id] = revocations
        return FleetTrust(self.ca_keys, MappingProxyType(held)), revocations
