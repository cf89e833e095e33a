"""Link messages and frames: what the engine puts on a link, defined once.

A *frame* is what a transport carries in one datagram / write; it never
exceeds the link's MTU. Byte 0 says what follows:

* ``0x00`` + message: a whole message;
* ``0x01`` + msg_id(1) + index(1) + count(1) + chunk: one fragment of a
  message too big for one frame (at most 255 fragments);
* ``0x02`` + counter(8) + ChaCha20-Poly1305(inner frame) + tag(16): a *sealed*
  frame, whose inner frame is one of the two above, encrypted;
* ``0x03`` + counter(8) + inner frame + tag(16): the same, authenticated but
  not encrypted (a link agreed to seal without confidentiality).

Sealed frames exist only on a link whose handshake agreed a session
(:mod:`agent.core.session` seals and opens them and states the nonce, the key
schedule and the replay window); an inner frame is at most the link MTU less
:data:`SEALED_OVERHEAD` (25) bytes.

A *message* is a deterministic CBOR array whose first item is its type:

===============  ===================================================  ==================
type             fields                                               when
===============  ===================================================  ==================
1 HELLO          version, nonce(16), card or card reference,          link up
                 capabilities [role, max message]
2 PROOF          Ed25519 signature (64)                               after HELLO
3 ACCEPT         ?1 ("answer with your ACCEPT": a retransmission)     handler allowed
4 DENY           ?reason (a certificate refused, codes below)         handler denied, or
                                                                     certificate refused
5 RECORDS        record, record, ...                                  flooding / sync
6 SUMMARY        summary(8)                                           keepalive
7 DIGEST         lo_peer_id(8), hi_peer_id(8), entries                sync on mismatch
8 CARD_REQUEST   --                                                   HELLO's card unknown
===============  ===================================================  ==================

A *digest entry* is 13 bytes, ``peer_id(8) + kind(1) + counter(4,
big-endian)``: it names one record. DIGEST ``entries`` is one byte string of
them, sorted, covering every record the sender holds for peer ids in ``[lo,
hi]``.

HELLO's fourth field (version 3) says what the sender is: ``[role, max_message,
?session_key]``, role 0 a router (holds the mesh, floods) or 1 a leaf (holds only its own
records: it is sent no floods, and its SUMMARY and DIGEST cover only its own records), and
the largest message it reassembles (256..65536 bytes; nothing larger is sent to it once
HELLO is in). The optional third item is the sender's *session offer*: a fresh X25519
public key (32 bytes) for this link, which the PROOFs bind (below). It rides inside the
capabilities, not as a fifth HELLO field, because a MicroPython leaf (LEAF_PROFILE.md)
takes exactly four fields and ignores the capabilities' contents; a host older than the
session offer refuses it as malformed, so hosts upgrade together (or turn sealing off).

HELLO's third field is the sender's signed card (*by value*), or the card's
digest entry (*by reference*, 13 bytes, so never a valid card): a sender that
holds the expected peer's card assumes that peer holds its own card too and
sends only the reference. A receiver that does not hold that card at that
counter or newer answers CARD_REQUEST (keeping a PROOF that arrives meanwhile
until the card is here), and the sender sends its HELLO again with the card
(same nonce); it answers only the first CARD_REQUEST of a link.

DENY's optional field says why a peer with fleet trust on refused the sender's
certificate (:data:`DENY_REASON_CODES`: 1 no certificate, 2 malformed, 3 unknown
CA, 4 bad signature, 5 wrong key, 6 not yet valid, 7 expired, 8 revoked); a DENY
without it is the connection request handler's. Anything else after DENY's type
is ignored, as every version so far did, so the field needs no version bump. It
is unauthenticated, for the refused side's log only.

The link proof is an Ed25519 signature over ``HANDSHAKE_CONTEXT +
verifier_nonce + signer_key + verifier_key`` from a signer that offered no
session key, and over ``SESSION_PROOF_CONTEXT + verifier_nonce + signer_key +
verifier_key + signer_session_key(32) + verifier_session_key(32 or 0)`` from
one that did (:func:`proof_message`): each side signs both offers as it saw
them, so an on-path attacker who replaces or strips either one breaks a PROOF.
A signer that offered a key never signs the first form, so stripping an offer
cannot pass for a peer that never offers (a leaf). HELLO is resent until the
remote's PROOF arrives; after admitting, our ACCEPT is resent as ``ACCEPT 1``
until the remote's ACCEPT arrives. ``ACCEPT 1`` is answered with a plain
ACCEPT, never with another ``ACCEPT 1``. Resends back off from one second (or
four times the message's transfer time on a slow link).
"""

from __future__ import annotations

import enum
import io
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, TypeAlias

import cbor2

from agent.core.certs import TrustReason
from agent.core.limits import (
    HANDSHAKE_CONTEXT,
    MAX_MESSAGE_BYTES,
    NONCE_BYTES,
    PEER_ID_BYTES,
    PROTOCOL_VERSION,
    SESSION_KEY_BYTES,
    SESSION_PROOF_CONTEXT,
    SIGNATURE_BYTES,
)
from agent.core.records import RecordKind, pack_digest_entry

FRAME_WHOLE: Final = 0x00
FRAME_FRAGMENT: Final = 0x01
#: A sealed frame, encrypted; and one authenticated only (see the module docstring).
FRAME_SEALED: Final = 0x02
FRAME_AUTHENTICATED: Final = 0x03
FRAGMENT_HEADER_BYTES: Final = 4
#: A sealed frame's header: its type byte and the sender's 64-bit frame counter (big-endian).
SEALED_HEADER_BYTES: Final = 9
#: The Poly1305 tag that ends a sealed frame.
SEALED_TAG_BYTES: Final = 16
#: What sealing adds to a frame: header and tag.
SEALED_OVERHEAD: Final = SEALED_HEADER_BYTES + SEALED_TAG_BYTES
MAX_FRAGMENTS: Final = 255
DIGEST_ENTRY_BYTES: Final = 13
SUMMARY_BYTES: Final = 8


class MessageType(enum.IntEnum):
    HELLO = 1
    PROOF = 2
    ACCEPT = 3
    DENY = 4
    RECORDS = 5
    SUMMARY = 6
    DIGEST = 7
    CARD_REQUEST = 8


class WireError(ValueError):
    """A frame or message that does not follow the format above."""


def encode_message(kind: MessageType, *fields: Any) -> bytes:
    return cbor2.dumps([int(kind), *fields], canonical=True)


def decode_message(data: bytes) -> tuple[MessageType, tuple[Any, ...]]:
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    stream = io.BytesIO(data)
    try:
        item = cbor2.CBORDecoder(stream).decode()
    except Exception as exc:  # cbor2 raises several types for bad input
        raise WireError(f"message is not CBOR: {exc}") from None
    if stream.tell() != len(data):
        raise WireError(f"{len(data) - stream.tell()} trailing bytes after the message")
    if not isinstance(item, list | tuple) or not item or type(item[0]) is not int:
        raise WireError("a message is an array starting with its type")
    try:
        kind = MessageType(item[0])
    except ValueError:
        raise WireError(f"unknown message type {item[0]}") from None
    return kind, tuple(item[1:])


def digest_entry(peer_id: bytes, kind: RecordKind, counter: int) -> bytes:
    """The 13 bytes naming one record: in DIGEST entries, and as HELLO's card reference."""
    return pack_digest_entry(peer_id, kind, counter)


def read_digest_entry(entry: bytes) -> tuple[bytes, int, int]:
    """(peer id, kind, counter) of a 13-byte digest entry."""
    return entry[:PEER_ID_BYTES], entry[PEER_ID_BYTES], int.from_bytes(entry[PEER_ID_BYTES + 1 :], "big")


class Role(enum.IntEnum):
    """What a peer is to its links: a router holds the mesh; a leaf holds only its own records."""

    ROUTER = 0
    LEAF = 1


#: The smallest ``max_message`` a peer may announce: a PROOF (68 bytes), a HELLO by reference
#: (42) and a small card's HELLO by value (about 210). The first HELLO goes before the remote's
#: capabilities are known, so a leaf must reassemble its router's HELLO whatever it announces:
#: a router whose card is bigger than a leaf's ``max_message`` cannot attach that leaf.
MIN_MAX_MESSAGE: Final = 256


@dataclass(frozen=True, slots=True)
class Capabilities:
    """HELLO's last field: the sender's role and the largest message it reassembles."""

    role: Role = Role.ROUTER
    max_message: int = MAX_MESSAGE_BYTES

    def __post_init__(self) -> None:
        if not MIN_MAX_MESSAGE <= self.max_message <= MAX_MESSAGE_BYTES:
            raise ValueError(f"max_message must be in {MIN_MAX_MESSAGE}..{MAX_MESSAGE_BYTES}")

    def encode(self) -> list[int]:
        return [int(self.role), self.max_message]


ROUTER: Final = Capabilities()


@dataclass(frozen=True, slots=True)
class Hello:
    """A HELLO of this protocol version: the card by value, or by reference (``reference`` set)."""

    nonce: bytes
    #: The signed card, or its digest entry.
    card: bytes
    #: (peer id, counter) of a card sent by reference, else ``None``.
    reference: tuple[bytes, int] | None
    capabilities: Capabilities = ROUTER
    #: The sender's session offer (an X25519 public key for this link), else ``None``.
    session_key: bytes | None = None

    def encode(self) -> bytes:
        return encode_hello(self.nonce, self.card, self.capabilities, self.session_key)


def encode_hello(
    nonce: bytes, card: bytes, capabilities: Capabilities = ROUTER, session_key: bytes | None = None
) -> bytes:
    """A HELLO carrying ``card`` (the signed card or its :func:`digest_entry`) and, when given,
    a session offer as the capabilities' third item."""
    caps: list[int | bytes] = [*capabilities.encode()]
    if session_key is not None:
        caps.append(session_key)
    return encode_message(MessageType.HELLO, PROTOCOL_VERSION, nonce, card, caps)


def _capabilities(value: Any) -> tuple[Capabilities, bytes | None]:
    if not (isinstance(value, list) and len(value) in (2, 3) and all(type(v) is int for v in value[:2])):
        raise WireError("HELLO capabilities are [role, max_message, ?session_key]")
    role, max_message = value[:2]
    if role not in (Role.ROUTER, Role.LEAF):
        raise WireError(f"HELLO role must be 0 (router) or 1 (leaf), got {role if 0 <= role < 256 else '?'}")
    if not MIN_MAX_MESSAGE <= max_message <= MAX_MESSAGE_BYTES:
        raise WireError(f"HELLO max_message must be in {MIN_MAX_MESSAGE}..{MAX_MESSAGE_BYTES}")
    session_key = value[2] if len(value) == 3 else None
    if session_key is not None and not (
        isinstance(session_key, bytes) and len(session_key) == SESSION_KEY_BYTES
    ):
        raise WireError(f"a HELLO session offer is a {SESSION_KEY_BYTES}-byte X25519 key")
    return Capabilities(Role(role), max_message), session_key


def decode_hello(fields: tuple[Any, ...]) -> Hello:
    """Read a HELLO's fields; the caller has checked ``fields[0]`` is :data:`PROTOCOL_VERSION`."""
    if len(fields) != 4:
        raise WireError("HELLO is version, nonce, card, capabilities")
    _, nonce, card, capabilities = fields
    if not (isinstance(nonce, bytes) and len(nonce) == NONCE_BYTES and isinstance(card, bytes)):
        raise WireError("HELLO needs a 16-byte nonce and a card")
    caps, session_key = _capabilities(capabilities)
    if len(card) != DIGEST_ENTRY_BYTES:
        return Hello(nonce, card, None, caps, session_key)
    peer, kind, counter = read_digest_entry(card)
    if kind != RecordKind.CARD:
        raise WireError("a HELLO's record reference must name a card")
    return Hello(nonce, card, (peer, counter), caps, session_key)


def proof_message(
    verifier_nonce: bytes,
    signer_key: bytes,
    verifier_key: bytes,
    signer_session_key: bytes | None = None,
    verifier_session_key: bytes | None = None,
) -> bytes:
    """What a PROOF signs (the module docstring): the first form without a signer's session
    offer, else the second, binding both offers as the signer saw them."""
    if signer_session_key is None:
        return HANDSHAKE_CONTEXT + verifier_nonce + signer_key + verifier_key
    return (
        SESSION_PROOF_CONTEXT
        + verifier_nonce
        + signer_key
        + verifier_key
        + signer_session_key
        + (verifier_session_key or b"")
    )


class UnsupportedVersionError(WireError):
    """A HELLO of another protocol version (told apart from junk: its version comes first)."""

    def __init__(self, version: object) -> None:
        # Never format the remote's value: an int of 10**5000 digits cannot even be printed.
        shown = str(version) if type(version) is int and 0 <= version < 2**32 else type(version).__name__
        super().__init__(f"HELLO of protocol version {shown}; this peer speaks {PROTOCOL_VERSION}")


@dataclass(frozen=True, slots=True)
class Proof:
    """The link proof: an Ed25519 signature over the verifier's nonce and both keys."""

    signature: bytes

    def encode(self) -> bytes:
        return encode_message(MessageType.PROOF, self.signature)


@dataclass(frozen=True, slots=True)
class Accept:
    """The local handler admitted the link; ``ask_back``: a retransmission, answer with your ACCEPT."""

    ask_back: bool = False

    def encode(self) -> bytes:
        return encode_message(MessageType.ACCEPT, 1) if self.ask_back else encode_message(MessageType.ACCEPT)


#: DENY's reason codes: why the sender's certificate was refused. Never renumber.
DENY_REASON_CODES: Final[Mapping[TrustReason, int]] = MappingProxyType(
    {
        TrustReason.NO_CERTIFICATE: 1,
        TrustReason.MALFORMED: 2,
        TrustReason.UNKNOWN_CA: 3,
        TrustReason.BAD_SIGNATURE: 4,
        TrustReason.WRONG_KEY: 5,
        TrustReason.NOT_YET_VALID: 6,
        TrustReason.EXPIRED: 7,
        TrustReason.REVOKED: 8,
    }
)
_DENY_REASONS: Final[Mapping[int, TrustReason]] = {code: r for r, code in DENY_REASON_CODES.items()}


@dataclass(frozen=True, slots=True)
class Deny:
    """The link is refused: by the local handler (``reason`` ``None``), or because the receiver's
    certificate was refused (``reason`` says why; fleet trust)."""

    reason: TrustReason | None = None

    def encode(self) -> bytes:
        if self.reason is None:
            return encode_message(MessageType.DENY)
        return encode_message(MessageType.DENY, DENY_REASON_CODES[self.reason])


@dataclass(frozen=True, slots=True)
class Records:
    """Signed records, flooded or pushed by sync (opened and checked by the engine)."""

    records: tuple[bytes, ...]

    def encode(self) -> bytes:
        return encode_message(MessageType.RECORDS, *self.records)


@dataclass(frozen=True, slots=True)
class Summary:
    """The sender's 8-byte summary of everything it holds: the keepalive."""

    summary: bytes

    def encode(self) -> bytes:
        return encode_message(MessageType.SUMMARY, self.summary)


@dataclass(frozen=True, slots=True)
class Digest:
    """Every record the sender holds for peer ids in ``[lo, hi]``, as sorted digest entries."""

    lo: bytes
    hi: bytes
    entries: bytes

    def encode(self) -> bytes:
        return encode_message(MessageType.DIGEST, self.lo, self.hi, self.entries)

    def counters(self) -> dict[tuple[bytes, int], int]:
        """(peer id, kind) -> counter of every entry."""
        out: dict[tuple[bytes, int], int] = {}
        for i in range(0, len(self.entries), DIGEST_ENTRY_BYTES):
            pid, kind, counter = read_digest_entry(self.entries[i : i + DIGEST_ENTRY_BYTES])
            out[(pid, kind)] = counter
        return out


@dataclass(frozen=True, slots=True)
class CardRequest:
    """The receiver of a HELLO by reference does not hold that card: send it."""

    def encode(self) -> bytes:
        return encode_message(MessageType.CARD_REQUEST)


#: One frozen value per message type.
Message: TypeAlias = Hello | Proof | Accept | Deny | Records | Summary | Digest | CardRequest


#: Messages that only an established link may carry.
AFTER_HANDSHAKE: Final = frozenset({MessageType.RECORDS, MessageType.SUMMARY, MessageType.DIGEST})

#: Messages a sealed link still takes in plain frames: they go before the session keys
#: exist (and their repeats after). Anything else on a sealed link must come sealed.
BEFORE_SESSION: Final = frozenset({MessageType.HELLO, MessageType.PROOF, MessageType.CARD_REQUEST})


def message_type(message: bytes) -> int | None:
    """The type of an encoded message without decoding it (``None`` if it does not start as
    a message does: a CBOR array head, then a small integer)."""
    if len(message) < 2:
        return None
    head = message[0]
    at = 1 if 0x81 <= head <= 0x97 else 2 if head == 0x98 else 3 if head == 0x99 else 0
    return message[at] if at and len(message) > at and message[at] < 24 else None


def frame_message_type(frame: bytes) -> int | None:
    """The type of the message a plain frame carries whole, or begins (fragment 0); ``None`` for
    a later fragment, a sealed frame or anything else."""
    if frame[:1] == bytes([FRAME_WHOLE]):
        return message_type(frame[1:])
    if frame[:1] == bytes([FRAME_FRAGMENT]) and len(frame) > FRAGMENT_HEADER_BYTES and frame[2] == 0:
        return message_type(frame[FRAGMENT_HEADER_BYTES:])
    return None


def parse_message(data: bytes) -> Message:
    """Decode one message into its typed value; :class:`WireError` for anything malformed."""
    return parse_fields(*decode_message(data))


def parse_fields(kind: MessageType, fields: tuple[Any, ...]) -> Message:
    """The typed value of a decoded message; :class:`WireError` if its fields are malformed.

    A HELLO of another protocol version raises :class:`UnsupportedVersionError`.
    """
    if kind is MessageType.HELLO:
        version = fields[0] if fields else None
        if type(version) is not int or version != PROTOCOL_VERSION:
            raise UnsupportedVersionError(version)
        return decode_hello(fields)
    if kind is MessageType.PROOF:
        if len(fields) != 1 or not isinstance(fields[0], bytes) or len(fields[0]) != SIGNATURE_BYTES:
            raise WireError(f"PROOF carries one {SIGNATURE_BYTES}-byte signature")
        return Proof(fields[0])
    if kind is MessageType.ACCEPT:
        if fields and not (len(fields) == 1 and type(fields[0]) is int and fields[0] == 1):
            raise WireError("ACCEPT carries nothing or the integer 1")
        return Accept(ask_back=bool(fields))
    if kind is MessageType.DENY:
        # Anything but one known reason code is ignored, as every version so far did.
        code = fields[0] if len(fields) == 1 and type(fields[0]) is int else None
        return Deny(_DENY_REASONS.get(code) if code is not None else None)
    if kind is MessageType.CARD_REQUEST:
        return CardRequest()
    if kind is MessageType.RECORDS:
        if not all(isinstance(raw, bytes) for raw in fields):
            raise WireError("RECORDS carries byte strings only")
        return Records(fields)
    if kind is MessageType.SUMMARY:
        if len(fields) != 1 or not isinstance(fields[0], bytes) or len(fields[0]) != SUMMARY_BYTES:
            raise WireError(f"SUMMARY carries one {SUMMARY_BYTES}-byte hash")
        return Summary(fields[0])
    if len(fields) != 3 or not all(isinstance(f, bytes) for f in fields):
        raise WireError("DIGEST is lo(8), hi(8), entries")
    lo, hi, entries = fields
    if len(lo) != PEER_ID_BYTES or len(hi) != PEER_ID_BYTES or len(entries) % DIGEST_ENTRY_BYTES:
        raise WireError("DIGEST is lo(8), hi(8), entries of 13 bytes each")
    return Digest(lo, hi, entries)


def max_message_bytes(mtu: int) -> int:
    """Largest message a link with this MTU can carry (fragmented if need be)."""
    return min(MAX_MESSAGE_BYTES, MAX_FRAGMENTS * (mtu - FRAGMENT_HEADER_BYTES))


def frames_for(message: bytes, mtu: int, msg_id: int) -> list[bytes]:
    """Split one message into frames of at most ``mtu`` bytes."""
    if len(message) + 1 <= mtu:
        return [bytes([FRAME_WHOLE]) + message]
    chunk = mtu - FRAGMENT_HEADER_BYTES
    count = -(-len(message) // chunk)
    if count > MAX_FRAGMENTS:
        raise WireError(f"message of {len(message)} bytes needs {count} fragments at MTU {mtu}")
    return [
        bytes([FRAME_FRAGMENT, msg_id, i, count]) + message[i * chunk : (i + 1) * chunk] for i in range(count)
    ]
