"""Peer keys: Ed25519 public keys and their text form.

``peer_key_string`` is the unpadded base64url (RFC 4648 §5) encoding of the raw
32-byte Ed25519 public key, prefixed with ``pk``: 45 characters from
``[A-Za-z0-9_-]``, safe in URLs, file names and MQTT topics. A *peer id* is the
first 8 bytes of the raw key; links records use it to name neighbours compactly.
"""

from __future__ import annotations

import base64
import binascii

from agent.core.errors import PeerKeyError
from agent.core.limits import PEER_ID_BYTES, PUBLIC_KEY_BYTES

_PREFIX = "pk"


def peer_key_string(public_key: bytes) -> str:
    """The documented text form of a raw 32-byte Ed25519 public key."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise PeerKeyError(f"a public key is {PUBLIC_KEY_BYTES} bytes, got {len(public_key)}")
    return _PREFIX + base64.urlsafe_b64encode(public_key).rstrip(b"=").decode("ascii")


def public_key_from_string(text: str) -> bytes:
    """Parse a ``peer_key_string`` back into the raw public key."""
    if not text.startswith(_PREFIX):
        raise PeerKeyError(f"peer key {text!r} does not start with {_PREFIX!r}")
    body = text[len(_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError) as exc:
        raise PeerKeyError(f"peer key {text!r} is not base64url: {exc}") from None
    if len(raw) != PUBLIC_KEY_BYTES or peer_key_string(raw) != text:
        raise PeerKeyError(f"peer key {text!r} does not encode a {PUBLIC_KEY_BYTES}-byte key")
    return raw


def peer_id(public_key: bytes) -> bytes:
    """The short id links records use for a peer: the key's first 8 bytes."""
    return public_key[:PEER_ID_BYTES]
