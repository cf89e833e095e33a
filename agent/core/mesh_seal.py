"""Frames on a broadcast interface, authenticated per sender under the fleet's mesh key.

A broadcast frame reaches every neighbour in range, so it cannot carry one
pairwise MAC per neighbour (:mod:`agent.core.session` is for point-to-point
links). Instead every fleet member holds one 32-byte *mesh key*, a secret the
operator copies to each device with its certificate (``fleet-ca init`` makes
it; ``[trust] mesh_key``), and each sender authenticates its frames with a key
derived from it for its own short id, which every member can derive too::

    sender_key = HKDF-SHA256(ikm = mesh key, salt = none, length = 32,
                             info = MESH_CONTEXT ‖ sender short id(4))

**A sealed medium frame** (the link frame, whole or fragment, inside)::

    sender(4) ‖ dest(4) ‖ counter(8, big-endian) ‖ body ‖ tag(8)
    counter = flag(1 bit: 1 encrypted) ‖ epoch(31 bits) ‖ sequence(32 bits)
    nonce   = 00000000 ‖ counter                       (12 bytes)
    full    = ChaCha20-Poly1305(sender_key, nonce, plaintext, associated data)
      encrypted:     plaintext = link frame, associated data = sender ‖ dest ‖ counter,
                     body = full's ciphertext, tag = full's tag[0:8]
      authenticated: plaintext = empty, associated data = sender ‖ dest ‖ counter ‖ link frame,
                     body = link frame, tag = full's tag[0:8]

16 bytes a frame (:data:`MESH_OVERHEAD`), sized for LoRa: an 8-byte tag gives
a forger one chance in 2^64 per try, and each try costs it airtime. The
receiver decrypts with the ChaCha20 keystream (block counter 1, as RFC 8439's
AEAD does), recomputes the full tag and compares its first 8 bytes in constant
time. The *epoch* is drawn once per interface from the engine's durable
counter source (it only grows, across restarts too), and the sequence counts
the interface's frames from 0, so a sender never reuses a nonce under its key.

**Replay**: per sender, the :class:`~agent.core.session.ReplayWindow` over the
64-bit counter (a restart's new epoch jumps ahead of the old counters). The
windows of at most :data:`MAX_MESH_SENDERS` senders are kept, the least
recently heard forgotten first; an entry is made only after a tag verifies,
so a forger leaves nothing behind.

What it protects: a frame is accepted only from a holder of the mesh key, once,
unaltered. It does not tell fleet members apart: any member can forge another
member's short id (the pairwise PROOF still binds every neighbour's link to its
key, and every record is signed by its peer). Two members whose peer ids share
their first four bytes derive the same key; a nonce is then reused only if their
epochs and sequences also meet.
"""

from __future__ import annotations

import collections
import hmac
from dataclasses import dataclass, field
from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from agent.core.reasons import SessionReason
from agent.core.session import ReplayWindow, SessionError

__all__ = ["MAX_MESH_SENDERS", "MESH_KEY_BYTES", "MESH_OVERHEAD", "MeshSeal", "sender_key"]

MESH_CONTEXT: Final = b"presence-agent/mesh-frame/v1"
MESH_KEY_BYTES: Final = 32
MESH_COUNTER_BYTES: Final = 8
MESH_TAG_BYTES: Final = 8
#: What the seal adds to a medium frame.
MESH_OVERHEAD: Final = MESH_COUNTER_BYTES + MESH_TAG_BYTES
#: Replay windows kept, one per sender heard (least recently heard forgotten first).
MAX_MESH_SENDERS: Final = 256
_HEADER_BYTES: Final = 8  # sender(4) ‖ dest(4), agent.core.medium's header
_ENCRYPTED: Final = 1 << 63
_EPOCH_MASK: Final = (1 << 31) - 1


def sender_key(mesh_key: bytes, short_id: bytes) -> bytes:
    """The key ``short_id``'s frames are sealed with (module docstring)."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=MESH_CONTEXT + short_id)
    return hkdf.derive(mesh_key)


def _tag(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """The AEAD's whole output: ciphertext (as long as ``plaintext``) and its 16-byte tag."""
    return ChaCha20Poly1305(key).encrypt(nonce, plaintext, aad)


@dataclass(slots=True)
class MeshSeal:
    """One interface's sealing: this sender's counter and the senders' replay windows."""

    mesh_key: bytes
    short_id: bytes
    epoch: int
    encrypt: bool = True
    sequence: int = 0
    _own_key: bytes = b""
    _windows: collections.OrderedDict[bytes, ReplayWindow] = field(default_factory=collections.OrderedDict)

    def __post_init__(self) -> None:
        if len(self.mesh_key) != MESH_KEY_BYTES:
            raise ValueError(f"a mesh key is {MESH_KEY_BYTES} bytes")
        self._own_key = sender_key(self.mesh_key, self.short_id)

    def seal(self, medium_frame: bytes) -> bytes:
        """``sender ‖ dest ‖ link frame`` (this sender's) -> the sealed medium frame."""
        header, inner = medium_frame[:_HEADER_BYTES], medium_frame[_HEADER_BYTES:]
        if self.sequence >= 1 << 32:
            self.epoch, self.sequence = self.epoch + 1, 0  # never reached: 2^32 frames
        counter = (self.epoch & _EPOCH_MASK) << 32 | self.sequence
        self.sequence += 1
        if self.encrypt:
            counter |= _ENCRYPTED
        prefix = header + counter.to_bytes(MESH_COUNTER_BYTES, "big")
        nonce = bytes(4) + prefix[_HEADER_BYTES:]
        if self.encrypt:
            full = _tag(self._own_key, nonce, inner, prefix)
            return prefix + full[:-16] + full[-16:][:MESH_TAG_BYTES]
        return prefix + inner + _tag(self._own_key, nonce, b"", prefix + inner)[:MESH_TAG_BYTES]

    def open(self, data: bytes) -> bytes:
        """A sealed medium frame -> ``sender ‖ dest ‖ link frame``; :class:`SessionError` if refused."""
        if len(data) < _HEADER_BYTES + MESH_OVERHEAD:
            raise SessionError(SessionReason.MALFORMED, f"a sealed medium frame of {len(data)} bytes")
        sender = data[:4]
        prefix = data[: _HEADER_BYTES + MESH_COUNTER_BYTES]
        counter = int.from_bytes(prefix[_HEADER_BYTES:], "big")
        position = counter & ~_ENCRYPTED  # replays are judged by epoch and sequence
        window = self._windows.get(sender)
        if window is not None:
            window.check(position)
        body, tag = data[len(prefix) : -MESH_TAG_BYTES], data[-MESH_TAG_BYTES:]
        key = sender_key(self.mesh_key, sender)
        nonce = bytes(4) + prefix[_HEADER_BYTES:]
        if counter & _ENCRYPTED:
            # RFC 8439: the message is encrypted from block 1 on (block 0 keys Poly1305).
            stream = Cipher(algorithms.ChaCha20(key, (1).to_bytes(4, "little") + nonce), mode=None)
            inner = stream.decryptor().update(body)
            expected = _tag(key, nonce, inner, prefix)[-16:]
        else:
            inner = body
            expected = _tag(key, nonce, b"", prefix + inner)
        if not hmac.compare_digest(expected[:MESH_TAG_BYTES], tag):
            raise SessionError(SessionReason.BAD_TAG, f"a frame from {sender.hex()} fails its tag")
        if window is None:
            window = self._windows[sender] = ReplayWindow()
            if len(self._windows) > MAX_MESH_SENDERS:
                self._windows.popitem(last=False)
        else:
            self._windows.move_to_end(sender)
        window.accept(position)
        return data[:_HEADER_BYTES] + inner
