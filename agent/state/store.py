"""The state store: one SQLite file, ``<state_dir>/state.sqlite3``.

It keeps what must survive a restart:

* the record counter's reserved ceiling (see :meth:`StateStore.next_counter`);
* the metadata JSON (and device name) this peer publishes;
* the signed records this peer holds, newest per ``(public_key, kind)``;
* the public key of the identity it belongs to.

What is refused (a :class:`StoreError` naming the file; nothing is written):

* a file that is not this agent's store: empty, not SQLite, damaged, or
  SQLite with other tables or a schema version this code does not know;
* a store without its counter ceiling: counters could repeat;
* a store bound to another identity (copied, or its key replaced): it holds
  another peer's metadata, records and counter.

Only a state directory without a database file gets a new store. It is built
complete (schema, counter ceiling, identity) in a temporary file and then
linked into place, so ``state.sqlite3`` either does not exist or is whole: an
existing file lacking any of it is damaged, never "new".

Durability: the database runs in WAL mode. Counter and metadata writes commit
with ``synchronous=FULL`` (the WAL is fsynced before the call returns), so they
survive a power cut, not just a crash. Held records use ``synchronous=NORMAL``:
losing the last few on power loss only means relearning them from neighbours.

One connection serves all threads, serialised by a lock.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Final

from agent.core.errors import CounterExhaustedError, PresenceError, RecordError
from agent.core.keys import peer_key_string
from agent.core.limits import MAX_COUNTER, MAX_RECORD_BYTES, PUBLIC_KEY_BYTES
from agent.core.records import open_record
from agent.state.layout import (
    IDENTITY_FILE_NAME,
    STORE_FILE_NAME,
    ensure_state_dir,
    fsync_dir,
    new_private_file,
)

log = logging.getLogger(__name__)

__all__ = [
    "COUNTER_BLOCK",
    "FIRST_COUNTER",
    "SCHEMA_VERSION",
    "STORE_FILE_NAME",
    "MemoryCounter",
    "StateStore",
    "StoreError",
]

#: SQLite page cache per connection, KiB (``PRAGMA cache_size`` takes it negated).
PAGE_CACHE_KIB: Final = 256
#: ``PRAGMA user_version`` of the schema this code writes. 2: the store records
#: the identity it belongs to, and always holds its counter ceiling. Version 1
#: (same tables, neither guarantee) is upgraded in place on open.
SCHEMA_VERSION: Final = 2
#: The oldest schema version this code upgrades in place.
OLDEST_SCHEMA_VERSION: Final = 1
#: The first counter a new identity hands out.
FIRST_COUNTER: Final = 1
#: Counters reserved per durable write. Each reservation costs an fsync (slow on
#: SD cards), and each restart or crash skips the unused rest of a block. Peers
#: sign a record only when something changes, so 64 means about one fsync per
#: 64 signed records while a restart burns at most 64 of 2**32 counters: even a
#: crash loop every second would take over two years to exhaust the space.
COUNTER_BLOCK: Final = 64

_CEILING_KEY: Final = "reserved_ceiling"
_METADATA_KEY: Final = "metadata_json"
_DEVICE_NAME_KEY: Final = "device_name"
_OWNER_KEY: Final = "identity_public_key"

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS settings (
        name  TEXT PRIMARY KEY NOT NULL,
        value NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS records (
        public_key BLOB    NOT NULL,
        kind       INTEGER NOT NULL,
        counter    INTEGER NOT NULL,
        raw        BLOB    NOT NULL,
        PRIMARY KEY (public_key, kind)
    ) WITHOUT ROWID""",
)

_PUT_SETTING: Final = (
    "INSERT INTO settings(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value"
)
# Keep the higher counter. On a tie the stored record wins: a peer signing two
# different records with one counter is misbehaving, and first-seen is stable.
_UPSERT_RECORD: Final = (
    "INSERT INTO records(public_key, kind, counter, raw) VALUES (?, ?, ?, ?) "
    "ON CONFLICT(public_key, kind) DO UPDATE SET counter = excluded.counter, raw = excluded.raw "
    "WHERE excluded.counter > records.counter"
)


class StoreError(PresenceError):
    """The state store file cannot be opened, read or written, or is not this identity's."""


class _Damaged(sqlite3.DatabaseError):
    """One of our own checks failed: the file is SQLite, but not a sound state store."""


#: What reading a damaged file can raise: SQLite's errors, and a UnicodeDecodeError
#: when the sqlite3 module decodes text (even an error message) that is not UTF-8.
_DB_FAILURES: Final = (sqlite3.Error, UnicodeError)


class MemoryCounter:
    """An in-memory :class:`CounterSource` (for the simulator and tests); forgets on exit."""

    def __init__(self, start: int = FIRST_COUNTER) -> None:
        self._next = start
        self._lock = threading.Lock()

    def next_counter(self) -> int:
        """The next counter (strictly increasing)."""
        with self._lock:
            if self._next > MAX_COUNTER:
                raise CounterExhaustedError(f"record counter passed {MAX_COUNTER}")
            value = self._next
            self._next += 1
            return value

    def advance_past(self, counter: int) -> None:
        """Make every later :meth:`next_counter` return more than ``counter``."""
        with self._lock:
            self._next = max(self._next, counter + 1)


class StateStore:
    """This peer's persistent state in SQLite. Create with :meth:`open`."""

    def __init__(self, path: Path, conn: sqlite3.Connection, ceiling: int) -> None:
        """Use :meth:`open`; this only wires up an already-prepared connection."""
        self._path = path
        self._conn: sqlite3.Connection | None = conn
        self._lock = threading.Lock()
        self._synchronous_full = True
        # Counters in [_next, _limit) are durably reserved by this process. On
        # open nothing is: whatever an earlier process reserved may have been used.
        self._next = ceiling
        self._limit = ceiling

    # ------------------------------------------------------------ lifecycle

    @classmethod
    def open(cls, state_dir: Path, owner: bytes) -> StateStore:
        """Open the store in ``state_dir`` that belongs to ``owner``, creating it if there is none.

        ``owner`` is the raw public key of this peer's identity. A new store
        records it; an existing one must have recorded the same key (a store
        of schema version 1, which predates this, adopts it once, logged).

        Raises :class:`StoreError` naming the file if it is not a sound store
        of a schema version this code understands, has lost its counter
        ceiling, or belongs to another identity. The file is never replaced
        or repaired automatically.
        """
        owner = bytes(owner)
        if len(owner) != PUBLIC_KEY_BYTES:
            raise ValueError(f"owner must be a {PUBLIC_KEY_BYTES}-byte public key, got {len(owner)} bytes")
        state_dir = Path(state_dir)
        ensure_state_dir(state_dir)
        path = state_dir / STORE_FILE_NAME
        if not (path.exists() or path.is_symlink()):
            _create(path, owner)
        _check_not_empty(path)
        try:
            # mode=rw: never let SQLite create an empty file in place of a missing one.
            conn = sqlite3.connect(
                f"{path.absolute().as_uri()}?mode=rw",
                uri=True,
                timeout=10.0,
                isolation_level=None,
                check_same_thread=False,
            )
        except _DB_FAILURES as exc:
            raise _store_error(path, "cannot be opened", exc) from None
        try:
            ceiling = _prepare(conn, path, owner)
        except _DB_FAILURES as exc:
            conn.close()
            raise _store_error(path, "is damaged or not a state store", exc) from None
        except BaseException:
            conn.close()
            raise
        return cls(path, conn, ceiling)

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    def close(self) -> None:
        """Close the database. Idempotent; later calls raise :class:`StoreError`."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> StateStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------ counter

    def next_counter(self) -> int:
        """A record counter larger than any this state directory handed out before.

        Holds across restarts and ``kill -9``: a block of counters is durably
        reserved (committed with ``synchronous=FULL``) before any of it is
        handed out, and a newly opened store starts above the last reservation.
        Raises :class:`CounterExhaustedError` past ``MAX_COUNTER``.
        """
        with self._lock:
            if self._next >= self._limit:
                self._reserve_block()
            value = self._next
            self._next += 1
            return value

    def advance_past(self, counter: int) -> None:
        """Make every later :meth:`next_counter` return more than ``counter``.

        For when this peer learns it once signed a higher counter (e.g. the
        store was lost but neighbours still hold its records). Nothing is
        written: the next reservation persists the jump.
        """
        with self._lock:
            self._next = max(self._next, counter + 1)

    def _reserve_block(self) -> None:
        # Caller holds self._lock.
        if self._next > MAX_COUNTER:
            raise CounterExhaustedError(f"record counter passed {MAX_COUNTER}")
        with self._write(durable=True) as conn:
            # Re-read inside the write transaction: another process sharing this
            # file may have reserved beyond our block since we last looked.
            start = max(self._next, _read_ceiling(conn))
            if start > MAX_COUNTER:
                raise CounterExhaustedError(f"record counter passed {MAX_COUNTER}")
            ceiling = min(start + COUNTER_BLOCK, MAX_COUNTER + 1)
            conn.execute(_PUT_SETTING, (_CEILING_KEY, ceiling))
        self._next, self._limit = start, ceiling

    # ------------------------------------------------------------ settings

    def load_metadata_json(self) -> str | None:
        """The metadata JSON text last saved, or None if never saved."""
        return self._get_text(_METADATA_KEY)

    def save_metadata_json(self, text: str) -> None:
        """Store the metadata JSON text atomically; durable once this returns.

        The text is stored as given: validating it is the caller's job.
        """
        self._put_text(_METADATA_KEY, text)

    def load_device_name(self) -> str | None:
        """The device name last saved, or None if never saved."""
        return self._get_text(_DEVICE_NAME_KEY)

    def save_device_name(self, name: str) -> None:
        """Store the device name atomically; durable once this returns."""
        self._put_text(_DEVICE_NAME_KEY, name)

    def _get_text(self, key: str) -> str | None:
        with self._lock, self._guard("read"):
            row = self._connection().execute("SELECT value FROM settings WHERE name = ?", (key,)).fetchone()
        if row is None:
            return None
        value = row[0]
        if not isinstance(value, str):
            raise StoreError(f"state store {self._path}: setting {key!r} is not text")
        return value

    def _put_text(self, key: str, text: str) -> None:
        if not isinstance(text, str):
            raise TypeError(f"{key} must be str, got {type(text).__name__}")
        with self._lock, self._write(durable=True) as conn:
            conn.execute(_PUT_SETTING, (key, text))

    # ------------------------------------------------------------ held records

    def save_records(self, records: Iterable[bytes]) -> None:
        """Upsert raw signed records in one transaction, keeping the higher counter.

        Records are keyed by ``(public_key, kind)``; a record whose counter is
        not above the stored one is ignored. Signatures are not checked here
        (the caller stores only records it verified), but structure is: if any
        record does not parse, :class:`RecordError` is raised and nothing is saved.
        """
        rows = []
        for item in records:
            raw = bytes(item)
            if len(raw) > MAX_RECORD_BYTES:
                raise RecordError("oversized", f"record is {len(raw)} bytes")
            env = open_record(raw)
            rows.append((env.public_key, int(env.kind), env.counter, raw))
        if not rows:
            return
        with self._lock, self._write(durable=False) as conn:
            conn.executemany(_UPSERT_RECORD, rows)

    def delete_records(self, keys: Iterable[tuple[bytes, int]]) -> None:
        """Delete held records by ``(public_key, kind)``; missing keys are ignored."""
        rows = [(bytes(public_key), int(kind)) for public_key, kind in keys]
        if not rows:
            return
        with self._lock, self._write(durable=False) as conn:
            conn.executemany("DELETE FROM records WHERE public_key = ? AND kind = ?", rows)

    def load_records(self) -> list[bytes]:
        """Every held record's raw bytes (signatures unchecked: verify before use), cards first
        (with fleet trust on, a links record counts only beside its peer's certified card).

        A row that does not parse, or disagrees with its own key columns, is
        logged, skipped and deleted, so a fresh copy of that record can be saved.
        """
        with self._lock:
            with self._guard("read"):
                rows = (
                    self._connection()
                    .execute("SELECT public_key, kind, counter, raw FROM records ORDER BY kind")
                    .fetchall()
                )
            good: list[bytes] = []
            bad: list[tuple[object, object]] = []
            for public_key, kind, counter, raw in rows:
                problem = _row_problem(public_key, kind, counter, raw)
                if problem is None:
                    good.append(raw)
                    continue
                log.warning(
                    "%s: skipping held record of %s kind %r: %s",
                    self._path,
                    _describe_key(public_key),
                    kind,
                    problem,
                )
                bad.append((public_key, kind))
            if bad:
                try:
                    with self._write(durable=False) as conn:
                        conn.executemany("DELETE FROM records WHERE public_key = ? AND kind = ?", bad)
                except StoreError as exc:
                    log.warning("%s: could not delete damaged records: %s", self._path, exc)
        return good

    # ------------------------------------------------------------ plumbing

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"state store {self._path} is closed")
        return self._conn

    @contextlib.contextmanager
    def _guard(self, action: str) -> Iterator[None]:
        """Turn database failures (disk full, corruption, locked, bad text) into StoreError."""
        try:
            yield
        except _DB_FAILURES as exc:
            raise _store_error(self._path, f"failed to {action}", exc) from None

    @contextlib.contextmanager
    def _write(self, *, durable: bool) -> Iterator[sqlite3.Connection]:
        """One write transaction; caller holds the lock. Rolls back on any error."""
        conn = self._connection()
        with self._guard("write"):
            if durable != self._synchronous_full:
                # Only changeable outside a transaction; cheap (no I/O).
                conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                self._synchronous_full = durable
            # IMMEDIATE takes the write lock up front, so the reads inside a
            # transaction (e.g. the counter ceiling) cannot go stale before commit.
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                # Also after a failed COMMIT (disk full, I/O error): never leave
                # the shared connection inside a half-done transaction.
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise


_MOVE_ASIDE: Final = (
    "It was not modified; restore it from a backup, or move it aside to start with an empty store "
    "(this peer keeps its identity, but its records may be ignored by peers until its counter "
    "passes the old one)."
)


def _store_error(path: Path, problem: str, exc: BaseException) -> StoreError:
    if isinstance(exc, _Damaged):
        return StoreError(f"state store {path} {exc}. {_MOVE_ASIDE}")
    return StoreError(f"state store {path} {problem} ({exc}). {_MOVE_ASIDE}")


def _check_not_empty(path: Path) -> None:
    # SQLite would take a 0-byte file for a new database; ours are never empty.
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise StoreError(f"state store {path} cannot be opened ({exc.strerror or exc})") from None
    if size == 0:
        raise StoreError(f"state store {path} is empty (0 bytes), so it is not a state store. {_MOVE_ASIDE}")


def _create(path: Path, owner: bytes) -> None:
    """Build a complete new store in a temporary file, then link it into place.

    So ``path`` never exists half-made: not after ``kill -9``, not to a second
    process racing this one (whose store, if it linked first, is kept).
    """
    directory = path.parent
    try:
        fd, tmp = new_private_file(directory, prefix=f".{path.name}.", suffix=".new")
    except OSError as exc:
        raise StoreError(f"state store {path} cannot be created ({exc.strerror or exc})") from None
    os.close(fd)
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(_PUT_SETTING, (_CEILING_KEY, FIRST_COUNTER))
            conn.execute(_PUT_SETTING, (_OWNER_KEY, owner))
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
        finally:
            conn.close()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return  # another process created it meanwhile: open theirs
        except OSError:
            # Filesystems without hard links (e.g. FAT): atomic, but may clobber a
            # store created in the same instant by a second agent on this directory.
            os.replace(tmp, path)
        fsync_dir(directory)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"state store {path} cannot be created ({exc})") from None
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def _prepare(conn: sqlite3.Connection, path: Path, owner: bytes) -> int:
    """Check the open file is ``owner``'s sound store, upgrade it, and return its counter ceiling."""
    # Read-only checks first: nothing is written to a file that is not ours.
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"state store {path} has schema version {version}, newer than this "
            f"agent's {SCHEMA_VERSION}; upgrade the agent. The file was not modified."
        )
    if version < OLDEST_SCHEMA_VERSION:
        raise _Damaged(f"is an SQLite database of schema version {version}, not a state store")
    if conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name").fetchall() != (
        _expected_master()
    ):
        raise _Damaged("does not hold exactly the state store's tables (damaged, or another database)")
    (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
    if str(mode).lower() != "wal":
        log.warning("%s: WAL unavailable, using journal_mode=%s", path, mode)
    conn.execute("PRAGMA synchronous=FULL")
    # The engine holds every record in memory and the store is read only at start:
    # SQLite's default 2 MiB page cache would only duplicate it.
    conn.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")
    if version < SCHEMA_VERSION:
        _upgrade(conn, path, owner)
    _check_owner(conn, path, owner)
    return _read_ceiling(conn)


@functools.cache
def _expected_master() -> list[tuple[object, ...]]:
    """``sqlite_master`` as ``_SCHEMA`` makes it (the tables are the same in versions 1 and 2)."""
    memory = sqlite3.connect(":memory:")
    try:
        for statement in _SCHEMA:
            memory.execute(statement)
        rows: list[tuple[object, ...]] = memory.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name"
        ).fetchall()
    finally:
        memory.close()
    return rows


def _upgrade(conn: sqlite3.Connection, path: Path, owner: bytes) -> None:
    """Upgrade schema 1 to 2 in one transaction: bind to ``owner``, make sure of the ceiling."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Re-read under the write lock: another process may have just upgraded.
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version == 1:
            if conn.execute("SELECT 1 FROM settings WHERE name = ?", (_CEILING_KEY,)).fetchone() is None:
                # Version 1 wrote the ceiling at the first counter, before anything
                # else was kept: only a store that never handed one out may lack it.
                if conn.execute(
                    "SELECT EXISTS(SELECT 1 FROM settings) OR EXISTS(SELECT 1 FROM records)"
                ).fetchone() != (0,):
                    raise _Damaged(_LOST_CEILING)
                conn.execute(_PUT_SETTING, (_CEILING_KEY, FIRST_COUNTER))
            conn.execute("INSERT OR IGNORE INTO settings(name, value) VALUES (?, ?)", (_OWNER_KEY, owner))
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            log.warning(
                "%s: upgraded from schema version 1 to %d and bound to identity %s (%s), "
                "which older versions did not record",
                path,
                SCHEMA_VERSION,
                _describe_key(owner),
                path.parent / IDENTITY_FILE_NAME,
            )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _check_owner(conn: sqlite3.Connection, path: Path, owner: bytes) -> None:
    row = conn.execute("SELECT value FROM settings WHERE name = ?", (_OWNER_KEY,)).fetchone()
    if row is None:
        raise _Damaged(f"has lost the identity it belongs to (setting {_OWNER_KEY!r} is missing)")
    stored = row[0]
    if not isinstance(stored, bytes) or len(stored) != PUBLIC_KEY_BYTES:
        raise _Damaged(f"holds a damaged identity (setting {_OWNER_KEY!r} is {stored!r})")
    if stored != owner:
        key_file = path.parent / IDENTITY_FILE_NAME
        raise StoreError(
            f"state store {path} belongs to peer {_describe_key(stored)}, but the identity key file "
            f"{key_file} is peer {_describe_key(owner)}. Nothing was changed: a peer never takes over "
            "another key's records, metadata and counter. Restore the identity key this store "
            f"belongs to, or move {path} away to start fresh as {_describe_key(owner)}."
        )


_LOST_CEILING: Final = (
    f"has lost its counter ceiling (setting {_CEILING_KEY!r} is missing), "
    "so counters it already handed out could be handed out again"
)


def _read_ceiling(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM settings WHERE name = ?", (_CEILING_KEY,)).fetchone()
    if row is None:
        raise _Damaged(_LOST_CEILING)
    value = row[0]
    if type(value) is not int or value < FIRST_COUNTER:
        # Guessing a value here could reuse counters; refuse instead.
        raise _Damaged(f"holds a damaged counter ceiling {value!r}")
    return value


def _row_problem(public_key: object, kind: object, counter: object, raw: object) -> str | None:
    if not isinstance(raw, bytes):
        return f"raw is {type(raw).__name__}, not bytes"
    try:
        env = open_record(raw)
    except RecordError as exc:
        return str(exc)
    if (env.public_key, int(env.kind), env.counter) != (public_key, kind, counter):
        return "record does not match its key columns"
    return None


def _describe_key(public_key: object) -> str:
    if isinstance(public_key, bytes):
        try:
            return peer_key_string(public_key)
        except PresenceError:
            return public_key.hex()
    return repr(public_key)
