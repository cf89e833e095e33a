"""A link's session: the key agreed at the handshake, and sealed frames under it.

**Key agreement.** Each side of a point-to-point link draws a fresh X25519 key
pair for the link (:class:`SessionOffer`) and sends the public half in its
HELLO (the capabilities' third item, :mod:`agent.core.wire`); each PROOF
signs both offers as its signer saw them, so the Ed25519 identities that prove
themselves are the ones that agreed the key. Once the remote's PROOF verifies,
:func:`derive_session` computes::

    shared = X25519(own private, remote public)            (all zero: refused)
    okm    = HKDF-SHA256(ikm = shared, salt = none, length = 64,
                         info = SESSION_CONTEXT ‖ key_lo ‖ key_hi ‖ nonce_lo ‖ nonce_hi
                                ‖ offer_lo ‖ offer_hi)
    key for frames from lo = okm[0:32], from hi = okm[32:64]

where *lo* is the side whose Ed25519 public key sorts first and ``nonce_x`` /
``offer_x`` are that side's HELLO nonce and session offer. A key pair is used
for one link only and forgotten with it (forward secrecy: the identity keys
alone open no recorded link).

**A sealed frame** (the link frame, whole or fragment, inside)::

    type(1) ‖ counter(8, big-endian) ‖ body ‖ tag(16)
    type 0x02: body = ChaCha20(inner frame)   (encrypted)
    type 0x03: body = inner frame             (authenticated only)
    nonce = direction(4, big-endian: 0 from lo, 1 from hi) ‖ counter(8)
    ChaCha20-Poly1305(key of the sender's direction, nonce,
                      plaintext = inner frame (0x02) or empty (0x03),
                      associated data = type ‖ counter (0x02) or type ‖ counter ‖ inner frame (0x03))

25 bytes per frame (:data:`~agent.core.wire.SEALED_OVERHEAD`). The counter
starts at 0 per direction and grows by one per frame sent; it never wraps (a
link would close first: 2^64 frames). Because the counter travels in the
frame, loss and reordering on datagram media cost nothing but the frames lost.

**The replay window** (:class:`ReplayWindow`, RFC 4303 §3.4.3's): the highest
counter accepted and a 64-bit map of the 64 below it. A frame is accepted
once; one at or below ``highest - 64`` is refused as ``too_old``, a repeat as
``replayed``. The window moves only after the tag verifies, so a forged frame
with a huge counter cannot push genuine frames out of it.

:meth:`Session.open` raises :class:`SessionError` (its ``reason`` a
:class:`~agent.core.reasons.SessionReason`) for anything it refuses and never
anything else; the engine counts it and the link goes on.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from agent.core import x25519
from agent.core.limits import REPLAY_WINDOW, SESSION_CONTEXT, SESSION_KEY_BYTES
from agent.core.reasons import SessionReason
from agent.core.wire import (
    FRAME_AUTHENTICATED,
    FRAME_SEALED,
    SEALED_HEADER_BYTES,
    SEALED_OVERHEAD,
    SEALED_TAG_BYTES,
    WireError,
)

__all__ = [
    "ReplayWindow",
    "Sealing",
    "Session",
    "SessionError",
    "SessionOffer",
    "derive_session",
    "is_sealed_frame",
]

_MAX_COUNTER: Final = 2**64 - 1
_WINDOW_MASK: Final = (1 << REPLAY_WINDOW) - 1


class Sealing(enum.StrEnum):
    """Whether a peer seals its point-to-point links (``[trust] sealing``).

    ``off``: never offers a session (its links are plain). ``offer``: offers one on every
    link; a link is sealed when both ends offered, plain otherwise (the default with trust
    off). ``require``: offers one, and closes a link whose remote offered none
    (``handshake.unsealed``), but for a leaf when unsealed leaves are allowed (the default
    with trust on).
    """

    OFF = "off"
    OFFER = "offer"
    REQUIRE = "require"


class SessionError(WireError):
    """A sealed frame was refused; ``reason`` names its counter. The link stays up."""

    def __init__(self, reason: SessionReason, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"sealed frame dropped ({reason}): {detail}")


def is_sealed_frame(frame: bytes) -> bool:
    """Whether ``frame`` is a sealed frame (by its type byte)."""
    return bool(frame) and frame[0] in (FRAME_SEALED, FRAME_AUTHENTICATED)


@dataclass(frozen=True, slots=True)
class SessionOffer:
    """One link's X25519 key pair (:mod:`agent.core.x25519`): the public half goes in HELLO."""

    private: bytes = field(repr=False)
    public: bytes

    @classmethod
    def from_seed(cls, seed: bytes) -> SessionOffer:
        """The key pair of 32 random bytes (the engine's injected RNG draws them)."""
        return cls(seed, x25519.public_key(seed))


@dataclass(slots=True)
class ReplayWindow:
    """The counters accepted so far: the highest, and a map of the :data:`REPLAY_WINDOW` below."""

    highest: int = -1
    #: Bit ``i`` set: counter ``highest - i`` was accepted (bit 0 is ``highest`` itself).
    seen: int = 0

    def check(self, counter: int) -> None:
        """:class:`SessionError` if ``counter`` was accepted before or is too old to tell."""
        if counter > self.highest:
            return
        offset = self.highest - counter
        if offset >= REPLAY_WINDOW:
            raise SessionError(SessionReason.TOO_OLD, f"counter {counter} is behind the window")
        if self.seen >> offset & 1:
            raise SessionError(SessionReason.REPLAYED, f"counter {counter} was accepted before")

    def accept(self, counter: int) -> None:
        """Record ``counter`` (already :meth:`check`-ed, and its tag verified)."""
        if counter > self.highest:
            shift = counter - self.highest
            self.seen = (self.seen << shift | 1) & _WINDOW_MASK if shift < REPLAY_WINDOW else 1
            self.highest = counter
        else:
            self.seen |= 1 << (self.highest - counter)


@dataclass(slots=True)
class Session:
    """The two directions of one link's session: this side seals with one key and opens with the other."""

    _send: ChaCha20Poly1305
    _receive: ChaCha20Poly1305
    #: The direction this side sends in (0: it is *lo*), in the nonce's first 4 bytes.
    direction: int
    #: Seal with encryption (0x02) or authentication only (0x03).
    encrypt: bool = True
    sent: int = 0
    window: ReplayWindow = field(default_factory=ReplayWindow)

    overhead: int = SEALED_OVERHEAD

    def seal(self, inner: bytes) -> bytes:
        """The sealed frame carrying ``inner`` (a whole frame or a fragment)."""
        counter = self.sent
        if counter > _MAX_COUNTER:
            raise OverflowError("a link's frame counter is spent; the link must be re-established")
        self.sent += 1
        kind = FRAME_SEALED if self.encrypt else FRAME_AUTHENTICATED
        header = bytes([kind]) + counter.to_bytes(8, "big")
        nonce = self.direction.to_bytes(4, "big") + header[1:]
        if self.encrypt:
            return header + self._send.encrypt(nonce, inner, header)
        return header + inner + self._send.encrypt(nonce, b"", header + inner)

    def open(self, frame: bytes) -> bytes:
        """The inner frame of a sealed frame from the remote; :class:`SessionError` if refused."""
        if len(frame) < SEALED_OVERHEAD or frame[0] not in (FRAME_SEALED, FRAME_AUTHENTICATED):
            raise SessionError(SessionReason.MALFORMED, f"a sealed frame of {len(frame)} bytes")
        header = frame[:SEALED_HEADER_BYTES]
        counter = int.from_bytes(header[1:], "big")
        self.window.check(counter)  # cheap, before the tag
        nonce = (1 - self.direction).to_bytes(4, "big") + header[1:]
        try:
            if frame[0] == FRAME_SEALED:
                inner = self._receive.decrypt(nonce, frame[SEALED_HEADER_BYTES:], header)
            else:
                inner = frame[SEALED_HEADER_BYTES:-SEALED_TAG_BYTES]
                self._receive.decrypt(nonce, frame[-SEALED_TAG_BYTES:], header + inner)
        except InvalidTag:
            raise SessionError(SessionReason.BAD_TAG, f"frame {counter}'s tag does not verify") from None
        self.window.accept(counter)
        return inner


def derive_session(
    offer: SessionOffer,
    remote_offer: bytes,
    *,
    own_key: bytes,
    remote_key: bytes,
    own_nonce: bytes,
    remote_nonce: bytes,
    encrypt: bool = True,
) -> Session:
    """This side's :class:`Session` (module docstring's key schedule). ``ValueError`` if the
    remote's offer is not a usable X25519 key (a small-order point gives an all-zero secret)."""
    if len(remote_offer) != SESSION_KEY_BYTES:
        raise ValueError(f"a session offer is {SESSION_KEY_BYTES} bytes")
    shared = x25519.shared_secret(offer.private, remote_offer)  # ValueError if all zeros
    lo = own_key < remote_key
    sides = [(own_key, own_nonce, offer.public), (remote_key, remote_nonce, remote_offer)]
    if not lo:
        sides.reverse()
    (key_lo, nonce_lo, offer_lo), (key_hi, nonce_hi, offer_hi) = sides
    info = SESSION_CONTEXT + key_lo + key_hi + nonce_lo + nonce_hi + offer_lo + offer_hi
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=info).derive(shared)
    from_lo, from_hi = ChaCha20Poly1305(okm[:32]), ChaCha20Poly1305(okm[32:])
    if lo:
        return Session(from_lo, from_hi, 0, encrypt)
    return Session(from_hi, from_lo, 1, encrypt)
