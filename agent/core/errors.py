"""Typed errors raised to callers of the core and the Presence API."""

from __future__ import annotations

from agent.core.reasons import RejectReason


class PresenceError(Exception):
    """Base class of every error this package raises on purpose."""


class MetadataError(PresenceError, ValueError):
    """Metadata was refused; nothing was changed."""


class MetadataTooLargeError(MetadataError):
    """Metadata (or the card carrying it) exceeds its byte budget."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(f"{what} is {size} bytes; the limit is {limit} bytes. Nothing was changed.")
        self.size = size
        self.limit = limit


class RecordError(PresenceError, ValueError):
    """A signed record was rejected; ``reason`` names the counter it is counted under."""

    def __init__(self, reason: RejectReason | str, detail: str) -> None:
        self.reason = RejectReason(reason)
        self.detail = detail
        super().__init__(f"record rejected ({self.reason}): {detail}")


class PeerKeyError(PresenceError, ValueError):
    """A peer key string is not a valid encoded Ed25519 public key."""


class CounterExhaustedError(PresenceError):
    """The record counter reached its 32-bit maximum; a new identity is needed."""
