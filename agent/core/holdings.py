"""The records a peer holds, and everything derived from them kept up to date incrementally.

One record per (peer id, kind), the newest by counter. Beside them: a
byte-exact index (a flood echo is dropped before any parsing), the peer id →
public key map, the summary (XOR of every record's ``summary_hash``, so
equal summaries mean equal holdings), the changes the store has not yet
persisted, and the connections each remote peer claims in its links record
(the input of :mod:`agent.core.reachability` and of flood pruning).

Admission checks, cheapest first, each a :class:`RecordError` with its
:class:`RejectReason`, in :meth:`Holdings.check` (the engine sets its own
records aside first): another key holds this peer id, not newer than the
held one, or expired at the given wall-clock time. The table is bounded by
``max_peers`` peers and ``max_bytes`` of remote records: :meth:`Holdings.room_needed`
(which ``check`` answers too, for the record it checked) says what a record
lacks, and :mod:`agent.core.occupancy` decides who gives it up.
"""

from __future__ import annotations

import bisect
import itertools
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from agent.core.errors import RecordError
from agent.core.keys import peer_id
from agent.core.reasons import RejectReason
from agent.core.records import LINKS, Envelope, Links, Record, RecordKind
from agent.core.wire import digest_entry

RecordKey = tuple[bytes, RecordKind]
Claims = Mapping[tuple[bytes, int], int | None]

#: Records put lately that :meth:`Holdings.explain` tries, newest last.
RECENT_CHANGES: Final = 16

_NO_PEERS: Final[tuple[bytes, ...]] = ()
_NO_CLAIMS: Final[Claims] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Shortfall:
    """What a record lacks to be held: a peer's place (a new peer at ``max_peers``) and bytes."""

    place: bool
    bytes: int


class Holdings:
    """Held records of this peer and every other. ``local_key`` is this peer's own public key."""

    def __init__(self, local_key: bytes, max_peers: int, max_bytes: int) -> None:
        self.local_id = peer_id(local_key)
        self.max_peers = max_peers
        self.max_bytes = max_bytes
        #: Bytes of every held remote record.
        self.held_bytes = 0
        self._records: dict[RecordKey, Record] = {}
        self._by_raw: dict[bytes, RecordKey] = {}
        self.keys: dict[bytes, bytes] = {self.local_id: local_key}
        self._summary = 0
        # Records to persist (Record) or to delete from the store (the peer's public key).
        self._dirty: dict[RecordKey, Record | bytes] = {}
        #: Remote peers' claimed connections: peer id -> {(neighbour id, type code): distance}.
        self.claims: dict[bytes, Claims] = {}
        self._claim_peers: dict[bytes, tuple[bytes, ...]] = {}
        # Held peer ids in order, for DIGEST ranges; rebuilt lazily after a record comes or goes,
        # so a DIGEST costs a bisection, not a scan of every record (an admitted peer's tiny
        # DIGESTs would otherwise cost a scan each).
        self._sorted_ids: list[bytes] | None = None
        #: The latest puts: (key, what each changed in the summary).
        self._recent: deque[tuple[RecordKey, int]] = deque(maxlen=RECENT_CHANGES)

    # ---------------------------------------------------------------- queries

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[tuple[RecordKey, Record]]:
        return iter(self._records.items())

    def get(self, pid: bytes, kind: RecordKind) -> Record | None:
        return self._records.get((pid, kind))

    def key_of_raw(self, raw: bytes) -> RecordKey | None:
        """The (peer id, kind) whose held record is exactly ``raw``."""
        return self._by_raw.get(raw)

    def card_of(self, key: bytes | None) -> Record | None:
        """The held card of the peer with public key (or 8-byte peer id) ``key``."""
        card = self._records.get((key[:8], RecordKind.CARD)) if key is not None else None
        return card if card is not None and key is not None and card.public_key[: len(key)] == key else None

    def records_of(self, public_key: bytes) -> list[Record]:
        """The records held for a peer (card first)."""
        pid = public_key[:8]
        if self.keys.get(pid) != public_key:
            return []
        return [r for kind in RecordKind if (r := self._records.get((pid, kind))) is not None]

    def neighbours_claimed_by(self, pid: bytes) -> tuple[bytes, ...]:
        """Peer ids listed in ``pid``'s held links record."""
        return self._claim_peers.get(pid, _NO_PEERS)

    @property
    def summary(self) -> bytes:
        return self._summary.to_bytes(8, "big")

    def in_range(self, lo: bytes, hi: bytes) -> Iterator[tuple[RecordKey, Record]]:
        """Held records of peer ids in ``[lo, hi]``, in peer id order."""
        if self._sorted_ids is None:
            self._sorted_ids = sorted({pid for pid, _ in self._records})
        ids = self._sorted_ids
        records = self._records
        for i in range(bisect.bisect_left(ids, lo), bisect.bisect_right(ids, hi)):
            for kind in RecordKind:
                record = records.get((ids[i], kind))
                if record is not None:
                    yield (ids[i], kind), record

    def summary_of(self, pid: bytes) -> bytes:
        """The summary of one peer's held records alone (what a leaf holds of itself)."""
        value = 0
        for kind in RecordKind:
            record = self._records.get((pid, kind))
            if record is not None:
                value ^= record.summary_hash
        return value.to_bytes(8, "big")

    def digest_entries_of(self, pid: bytes) -> list[bytes]:
        """Sorted digest entries of one peer's held records."""
        return [digest_entry(pid, k, r.counter) for k in RecordKind if (r := self._records.get((pid, k)))]

    def explain(self, theirs: bytes) -> list[RecordKey]:
        """The records a peer whose summary is ``theirs`` lacks, if one or two recent puts
        account for the whole difference from ours (it holds the older versions of those, or
        none); ``[]`` when they do not (it may hold something we lack: that is a DIGEST's job).

        Summaries are XORs of record hashes, so a peer that missed one flooded record differs
        from us by exactly that record's change: on a medium, where a DIGEST is several frames,
        the record itself is the cheaper answer. Two changes cover a links change (both ends
        re-sign) and a record changed twice."""
        gap = self._summary ^ int.from_bytes(theirs, "big")
        if not gap:
            return []
        recent = self._recent
        for key, change in recent:
            if change == gap and key in self._records:
                return [key]
        for (key1, change1), (key2, change2) in itertools.combinations(recent, 2):
            if change1 ^ change2 == gap and key1 in self._records and key2 in self._records:
                return [key1] if key1 == key2 else [key1, key2]
        return []

    def digest_entries(self) -> list[bytes]:
        """Sorted digest entries of every held record."""
        return sorted(digest_entry(pid, kind, rec.counter) for (pid, kind), rec in self._records.items())

    # ---------------------------------------------------------------- admission

    def check(self, env: Envelope, wall: float, size: int) -> Shortfall | None:
        """Raise unless ``env`` may replace what is held: its peer id's key, newer, unexpired.
        Then what holding the record (``size`` bytes) lacks, as :meth:`room_needed` says."""
        kind, public_key, counter, expiry, _, _, _, pid = env  # one unpack, not a read each
        known = self.keys.get(pid)
        if known is not None and known != public_key:
            raise RecordError(RejectReason.KEY_MISMATCH, "another key already holds this peer id")
        held = self._records.get((pid, kind))
        if held is not None and counter <= held.counter:
            raise RecordError(RejectReason.STALE, f"counter {counter} <= held {held.counter}")
        if expiry <= wall:
            raise RecordError(RejectReason.EXPIRED, "record has expired")
        # room_needed, with the key and the held record at hand
        place = known is None and len(self.keys) >= self.max_peers
        return self._shortfall(place, size - (len(held.raw) if held is not None else 0))

    def room_needed(self, pid: bytes, kind: RecordKind, size: int) -> Shortfall | None:
        """What holding a remote record of ``size`` bytes for (``pid``, ``kind``) lacks, if anything."""
        held = self._records.get((pid, kind))
        place = pid not in self.keys and len(self.keys) >= self.max_peers
        return self._shortfall(place, size - (len(held.raw) if held is not None else 0))

    def _shortfall(self, place: bool, growth: int) -> Shortfall | None:
        over = self.held_bytes + growth - self.max_bytes
        if not place and over <= 0:
            return None
        return Shortfall(place, max(over, 0))

    def peer_sizes(self) -> dict[bytes, int]:
        """Every held remote peer id -> the bytes of its held records."""
        sizes: dict[bytes, int] = {}
        local = self.local_id
        for (pid, _), record in self._records.items():
            if pid != local:
                sizes[pid] = sizes.get(pid, 0) + len(record.raw)
        return sizes

    def bytes_of(self, pid: bytes) -> int:
        return sum(len(r.raw) for kind in RecordKind if (r := self._records.get((pid, kind))) is not None)

    # ---------------------------------------------------------------- changes

    def put(self, record: Record) -> bool:
        """Hold ``record`` in place of its (peer, kind)'s; ``True`` if a peer lost a claimed connection."""
        # Runs for every record accepted: the fields in one unpack, not a read each.
        kind, public_key, _, _, body, raw, pid, summary_hash = record
        key = (pid, kind)
        old = self._records.get(key)
        if old is not None:
            self._by_raw.pop(old.raw, None)
            self._summary ^= old.summary_hash
            self._recent.append((key, old.summary_hash ^ summary_hash))
        else:
            self._sorted_ids = None
            self._recent.append((key, summary_hash))
        self._records[key] = record
        self._by_raw[raw] = key
        self._summary ^= summary_hash
        self.keys[pid] = public_key
        if pid == self.local_id:
            return False
        self.held_bytes += len(raw) - (len(old.raw) if old is not None else 0)
        self._dirty[key] = record
        if kind is not LINKS:
            return False
        assert isinstance(body, Links)
        claims = body.claims
        previous = self.claims.get(pid, _NO_CLAIMS)
        self.claims[pid] = claims
        self._claim_peers[pid] = body.neighbour_ids
        return bool(previous) and not previous.keys() <= claims.keys()

    def forget(self, pid: bytes, kind: RecordKind) -> bool:
        """Drop a held record; ``True`` if there was one."""
        record = self._records.pop((pid, kind), None)
        if record is None:
            return False
        self._sorted_ids = None
        self._by_raw.pop(record.raw, None)
        self._summary ^= record.summary_hash
        if pid != self.local_id:
            self.held_bytes -= len(record.raw)
        self._dirty[(pid, kind)] = record.public_key
        if kind is RecordKind.LINKS:
            self.claims.pop(pid, None)
            self._claim_peers.pop(pid, None)
        return True

    def evict(self, pid: bytes) -> bool:
        """Drop every record of a remote peer and its key (it gave up its place); ``True`` if a
        links record was among them."""
        had_links = (pid, RecordKind.LINKS) in self._records
        for kind in RecordKind:
            self.forget(pid, kind)
        if pid != self.local_id:
            self.keys.pop(pid, None)
        return had_links

    def expired(self, wall: float) -> list[RecordKey]:
        """Remote records whose expiry has passed at wall-clock ``wall``."""
        return [k for k, r in self._records.items() if k[0] != self.local_id and r.expiry <= wall]

    def drop_unused_keys(self) -> None:
        """Forget the public keys of peers of which no record is held any more."""
        held = {pid for pid, _ in self._records}
        for pid in [p for p in self.keys if p not in held and p != self.local_id]:
            del self.keys[pid]

    def take_dirty(self) -> tuple[list[bytes], list[tuple[bytes, int]]]:
        """Records to persist and (public key, kind) pairs to forget, since the last call."""
        saved: list[bytes] = []
        deleted: list[tuple[bytes, int]] = []
        for (_, kind), entry in self._dirty.items():
            if isinstance(entry, Record):
                saved.append(entry.raw)
            else:
                deleted.append((entry, int(kind)))
        self._dirty.clear()
        return saved, deleted
