"""This peer's own two records: signing, the links record's throttle, refresh and recovery.

* **Signing.** A record's expiry is the wall clock plus ``record_ttl``; every
  signature takes a fresh counter from the :class:`CounterSource`, which makes
  it durable first, so no counter is ever signed twice.
* **The links record** lists the established links, one per (peer id, type),
  at most :data:`~agent.core.limits.MAX_CONNECTIONS_PER_RECORD`; the rest
  still carry traffic, unlisted. Which are listed: the links established
  first, so a newcomer never displaces a link listed before it (70 hostile
  links with ground low peer ids cannot push an honest, older link out of the
  record and its peers out of the mesh's graphs); a listed link leaves only by
  going down. Inside the record the kept entries are sorted by (peer id, type
  name), so the same links make the same record. It is re-signed only if its entries
  changed or it needs refreshing, throttled on the leading edge: a change
  after a quiet spell is signed at once, a burst yields at most one record per
  ``links_debounce`` (monotonic seconds).
* **Refresh.** A record is re-signed once its expiry is within
  ``refresh_before`` of the wall clock; as a timer, at that expiry converted
  with the driver's current wall offset.
* **Recovery.** A genuine own record with a higher counter than ours means this
  peer's state was lost (re-flashed, restored from a backup): the counters jump
  past it and the record is re-signed, or the mesh would ignore this peer
  until the old records expire.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core.limits import MAX_CONNECTIONS_PER_RECORD
from agent.core.records import (
    Card,
    ConnectionType,
    Envelope,
    LinkEntry,
    Links,
    Record,
    RecordKind,
    sign_record,
)


class CounterSource(Protocol):
    """Hands out record counters that never repeat, across restarts and crashes."""

    def next_counter(self) -> int: ...

    def advance_past(self, counter: int) -> None:
        """Make every later counter exceed ``counter`` (this peer's state was lost)."""
        ...


def links_record(entries: Iterable[LinkEntry]) -> tuple[Links, int]:
    """The links body for ``entries``, given oldest link first, and how many were left unlisted.

    One entry per (peer id, type), ranked by its first appearance (a later one
    only updates the distance); the first :data:`MAX_CONNECTIONS_PER_RECORD`
    are kept and sorted by (peer id, type name).
    """
    unique: dict[tuple[bytes, ConnectionType], LinkEntry] = {}
    for e in entries:
        unique[(e.peer_id, e.connection_type)] = e  # a dict keeps the first appearance's rank
    kept = sorted(list(unique)[:MAX_CONNECTIONS_PER_RECORD], key=lambda k: (k[0], k[1].value))
    return Links(tuple(unique[k] for k in kept)), max(0, len(unique) - MAX_CONNECTIONS_PER_RECORD)


class OwnRecords:
    """The current own card and links record, and when each is due again."""

    def __init__(
        self,
        private_key: Ed25519PrivateKey,
        public_key: bytes,
        counters: CounterSource,
        *,
        record_ttl: float,
        refresh_before: float,
        links_debounce: float,
        card: Card,
        wall: float,
    ) -> None:
        self._private_key = private_key
        self._public_key = public_key
        self._counters = counters
        self._ttl = record_ttl
        self._refresh_before = refresh_before
        self._debounce = links_debounce
        self.card_body = card
        self.card = self._sign(card, wall)
        self.links = self._sign(Links(()), wall)
        #: When the links record is due to be re-signed (monotonic), if a change is pending.
        self.links_due_at: float | None = None
        self._links_signed_at = -math.inf

    def _sign(self, body: Card | Links, wall: float) -> Record:
        expiry = int(wall + self._ttl)
        return sign_record(self._private_key, self._public_key, self._counters.next_counter(), expiry, body)

    def sign_card(self, card: Card, wall: float) -> Record:
        self.card_body = card
        self.card = self._sign(card, wall)
        return self.card

    def sign_links(self, links: Links, now: float, wall: float, force: bool = False) -> Record | None:
        """A new links record, or ``None`` if ``links`` is what the current one says and it is fresh."""
        fresh = self.links.expiry - wall > self._refresh_before
        if links == self.links.body and fresh and not force:
            return None
        self.links = self._sign(links, wall)
        self._links_signed_at = now
        return self.links

    def slow_links_down(self, debounce: float) -> None:
        """Re-sign the links record at most every ``debounce`` s (a radio medium is up: while
        links form, one record then carries several changes, each flooded over the air)."""
        self._debounce = max(self._debounce, debounce)

    def last_longer(self, ttl: float, refresh_before: float) -> bool:
        """Sign records to last at least ``ttl``, refreshed ``refresh_before`` ahead (a medium is up:
        each refresh floods the mesh's records over the air); ``True`` if that lengthened them."""
        if ttl <= self._ttl:
            return False
        self._ttl = ttl
        self._refresh_before = max(self._refresh_before, refresh_before)
        return True

    def links_changed(self, now: float) -> None:
        """The established links changed: schedule a re-sign, throttled on the leading edge."""
        if self.links_due_at is None:
            self.links_due_at = max(now, self._links_signed_at + self._debounce)

    def take_links_due(self, now: float) -> bool:
        """``True`` (once) if a scheduled re-sign of the links record is due."""
        if self.links_due_at is None or now < self.links_due_at:
            return False
        self.links_due_at = None
        return True

    def stale(self, wall: float) -> tuple[bool, bool]:
        """(card, links): whether each is due for refresh at wall-clock ``wall``."""
        return (
            self.card.expiry - wall <= self._refresh_before,
            self.links.expiry - wall <= self._refresh_before,
        )

    def refresh_at(self, wall_offset: float) -> float:
        """When (monotonic) the next refresh is due, with the wall clock ``now + wall_offset``."""
        return min(self.card.expiry, self.links.expiry) - self._refresh_before - wall_offset

    def lost_state(self, env: Envelope) -> bool:
        """``env`` is one of our own records with a higher counter than the current one."""
        own = self.card if env.kind is RecordKind.CARD else self.links
        return env.counter > own.counter

    def advance_past(self, counter: int) -> None:
        self._counters.advance_past(counter)
