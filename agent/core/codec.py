"""Opening and verifying records, behind a Protocol the simulator replaces with a shared memo."""

from __future__ import annotations

from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.core.records import Envelope, Record, load_public_key, open_record, verify_record


class RecordCodec(Protocol):
    """Parses and verifies records. The simulator shares one memoising codec across
    all its engines, so N engines do not verify the same bytes N times."""

    def open(self, raw: bytes) -> Envelope: ...

    def verify(self, envelope: Envelope, raw: bytes) -> Record: ...


class KeyCachingCodec:
    """The production codec: parses every time, caches loaded public keys."""

    def __init__(self) -> None:
        self._keys: dict[bytes, Ed25519PublicKey] = {}

    def open(self, raw: bytes) -> Envelope:
        return open_record(raw)

    def public_key(self, raw_key: bytes) -> Ed25519PublicKey:
        key = self._keys.get(raw_key)
        if key is None:
            key = self._keys[raw_key] = load_public_key(raw_key)
        return key

    def verify(self, envelope: Envelope, raw: bytes) -> Record:
        return verify_record(envelope, raw, self.public_key(envelope.public_key))
