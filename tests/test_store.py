"""The SQLite state store: metadata, the crash-safe counter, held records."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.core.engine import CounterSource
from agent.core.errors import CounterExhaustedError, PresenceError, RecordError
from agent.core.limits import MAX_COUNTER
from agent.core.records import (
    ConnectionType,
    LinkEntry,
    Links,
    RecordKind,
    make_card,
    open_record,
    sign_record,
)
from agent.state.identity import generate_identity
from agent.state.store import (
    COUNTER_BLOCK,
    SCHEMA_VERSION,
    STORE_FILE_NAME,
    MemoryCounter,
    StateStore,
    StoreError,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
CRASHER = Path(__file__).resolve().parent / "_crashers" / "counter_crasher.py"
EXPIRY = 2_000_000_000
#: The identity the stores in these tests belong to.
OWNER = generate_identity().public_key


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StateStore]:
    with StateStore.open(tmp_path, OWNER) as opened:
        yield opened


# ---------------------------------------------------------------- lifecycle


def test_open_creates_private_dir_and_db(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    with StateStore.open(state_dir, OWNER) as store:
        assert store.path == state_dir / STORE_FILE_NAME
    assert (state_dir / STORE_FILE_NAME).is_file()
    assert state_dir.stat().st_mode & 0o777 == 0o700


def test_closed_store_raises_store_error(tmp_path: Path) -> None:
    store = StateStore.open(tmp_path, OWNER)
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.load_metadata_json()
    with pytest.raises(StoreError, match="closed"):
        store.next_counter()


@pytest.mark.parametrize(
    "contents",
    [b"this is not a database, just some text\n" * 200, os.urandom(8192), b"SQLite format 3\x00"],
    ids=["text", "random", "bare-header"],
)
def test_corrupt_db_file_raises_store_error_naming_it(tmp_path: Path, contents: bytes) -> None:
    db = tmp_path / STORE_FILE_NAME
    db.write_bytes(contents)
    with pytest.raises(StoreError) as info:
        StateStore.open(tmp_path, OWNER)
    assert str(db) in str(info.value)
    assert isinstance(info.value, PresenceError)
    assert db.read_bytes() == contents


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    StateStore.open(tmp_path, OWNER).close()
    with sqlite3.connect(tmp_path / STORE_FILE_NAME) as conn:
        conn.execute("PRAGMA user_version=99")
    with pytest.raises(StoreError, match="schema version 99"):
        StateStore.open(tmp_path, OWNER)


def test_schema_version_and_wal(tmp_path: Path) -> None:
    with StateStore.open(tmp_path, OWNER):
        conn = sqlite3.connect(tmp_path / STORE_FILE_NAME)
        try:
            assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        finally:
            conn.close()


# ---------------------------------------------------------------- metadata


def test_metadata_round_trip_and_reopen(tmp_path: Path) -> None:
    with StateStore.open(tmp_path, OWNER) as store:
        assert store.load_metadata_json() is None
        store.save_metadata_json('{"role":"gateway"}')
        assert store.load_metadata_json() == '{"role":"gateway"}'
        store.save_metadata_json('{"role":"sensor","ünï":"cödé"}')
    with StateStore.open(tmp_path, OWNER) as store:
        assert store.load_metadata_json() == '{"role":"sensor","ünï":"cödé"}'


def test_device_name_round_trip(tmp_path: Path) -> None:
    with StateStore.open(tmp_path, OWNER) as store:
        assert store.load_device_name() is None
        store.save_device_name("pi-kitchen")
    with StateStore.open(tmp_path, OWNER) as store:
        assert store.load_device_name() == "pi-kitchen"
        assert store.load_metadata_json() is None


def test_metadata_must_be_text(store: StateStore) -> None:
    with pytest.raises(TypeError):
        store.save_metadata_json(b"{}")  # type: ignore[arg-type]


# ---------------------------------------------------------------- counter


def test_counter_starts_at_one_and_increases(store: StateStore) -> None:
    values = [store.next_counter() for _ in range(3 * COUNTER_BLOCK + 5)]
    assert values == list(range(1, 3 * COUNTER_BLOCK + 6))


def test_counter_increases_across_reopen_skipping_rest_of_block(tmp_path: Path) -> None:
    with StateStore.open(tmp_path, OWNER) as store:
        first = [store.next_counter() for _ in range(10)]
    with StateStore.open(tmp_path, OWNER) as store:
        after = store.next_counter()
    assert after > max(first)
    assert after == 1 + COUNTER_BLOCK  # the unused rest of the first block is skipped
    with StateStore.open(tmp_path, OWNER) as store:
        # Opening without handing anything out reserves nothing, so nothing is burnt.
        pass
    with StateStore.open(tmp_path, OWNER) as store:
        assert store.next_counter() == 1 + 2 * COUNTER_BLOCK


def test_counter_is_unique_across_threads(store: StateStore) -> None:
    results: list[list[int]] = [[] for _ in range(8)]

    def work(out: list[int]) -> None:
        out.extend(store.next_counter() for _ in range(300))

    threads = [threading.Thread(target=work, args=(out,)) for out in results]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [v for out in results for v in out]
    assert len(set(everything)) == len(everything) == 8 * 300
    for out in results:
        assert out == sorted(out)


def test_two_stores_on_one_dir_never_share_a_counter(tmp_path: Path) -> None:
    # Not a supported setup, but the reservation re-reads the ceiling, so it is safe.
    with StateStore.open(tmp_path, OWNER) as a, StateStore.open(tmp_path, OWNER) as b:
        values = []
        for _ in range(5 * COUNTER_BLOCK):
            values.append(a.next_counter())
            values.append(b.next_counter())
    assert len(set(values)) == len(values)


def test_advance_past_and_exhaustion(tmp_path: Path) -> None:
    with StateStore.open(tmp_path, OWNER) as store:
        assert store.next_counter() == 1
        store.advance_past(1000)
        assert store.next_counter() == 1001
        store.advance_past(5)  # never goes backwards
        assert store.next_counter() == 1002
        store.advance_past(MAX_COUNTER - 2)
        assert [store.next_counter() for _ in range(2)] == [MAX_COUNTER - 1, MAX_COUNTER]
        with pytest.raises(CounterExhaustedError):
            store.next_counter()
        with pytest.raises(CounterExhaustedError):
            store.next_counter()
    with StateStore.open(tmp_path, OWNER) as store, pytest.raises(CounterExhaustedError):
        store.next_counter()


def test_memory_counter() -> None:
    counter: CounterSource = MemoryCounter()
    assert [counter.next_counter() for _ in range(3)] == [1, 2, 3]
    memory = MemoryCounter(start=MAX_COUNTER - 1)
    memory.advance_past(5)
    assert memory.next_counter() == MAX_COUNTER - 1
    assert memory.next_counter() == MAX_COUNTER
    with pytest.raises(CounterExhaustedError):
        memory.next_counter()


def test_state_store_is_a_counter_source(store: StateStore) -> None:
    source: CounterSource = store
    assert source.next_counter() == 1


# ---------------------------------------------------------------- kill -9


@dataclass
class CrashRun:
    counters: list[int]
    saved: list[int]  # counters the dead process reported as saved metadata


def crash_run(state_dir: Path, *, pause_after: int = 0, kill_after: int = 0) -> CrashRun:
    """Run the crasher; SIGKILL it once paused, or after reading ``kill_after`` counters."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(
        [sys.executable, str(CRASHER), str(state_dir), str(pause_after), "7", OWNER.hex()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO_ROOT,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    seen = 0
    out = b""
    try:
        while True:
            line = proc.stdout.readline()
            out += line
            if not line:
                raise AssertionError(f"crasher died early: {proc.stderr.read().decode()}")
            if line == b"paused\n":
                break
            if line.strip().isdigit():
                seen += 1
                if seen == kill_after:
                    break
    finally:
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read()  # whatever it printed before it died
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        assert proc.stdin is not None
        proc.stdin.close()
    assert proc.returncode == -signal.SIGKILL
    out += rest
    complete = out.split(b"\n")[:-1]  # a final unterminated line may be cut off
    return CrashRun(
        counters=[int(x) for x in complete if x.isdigit()],
        saved=[int(x.split()[1]) for x in complete if x.startswith(b"saved ")],
    )


def check_after_crash(state_dir: Path, printed: list[int], run: CrashRun) -> None:
    assert printed == sorted(set(printed)), "counters repeated or went backwards"
    with StateStore.open(state_dir, OWNER) as store:
        assert store.next_counter() > max(printed)
        if run.saved:
            stored = json.loads(store.load_metadata_json() or "null")
            # It may have saved again after we stopped reading, never less.
            assert stored["last"] >= run.saved[-1]
            assert stored["last"] in printed


@pytest.mark.parametrize(
    "pause_after",
    [
        1,
        COUNTER_BLOCK - 1,
        COUNTER_BLOCK,
        COUNTER_BLOCK + 1,
        2 * COUNTER_BLOCK,
        2 * COUNTER_BLOCK + 1,
    ],
)
def test_kill_9_at_block_boundaries_never_reuses_a_counter(tmp_path: Path, pause_after: int) -> None:
    printed: list[int] = []
    for _ in range(2):  # crash twice so the second run starts from a crashed state
        run = crash_run(tmp_path, pause_after=pause_after)
        assert len(run.counters) == pause_after
        printed += run.counters
        check_after_crash(tmp_path, printed, run)
        # check_after_crash handed out one counter in-process; count it too.
        with StateStore.open(tmp_path, OWNER) as store:
            printed.append(store.next_counter())


@pytest.mark.parametrize("kill_after", [1, 50, 500])
def test_kill_9_while_running_never_reuses_a_counter(tmp_path: Path, kill_after: int) -> None:
    run = crash_run(tmp_path, kill_after=kill_after)
    assert len(run.counters) >= kill_after
    check_after_crash(tmp_path, run.counters, run)


# ---------------------------------------------------------------- held records


KEY_A = Ed25519PrivateKey.generate()
KEY_B = Ed25519PrivateKey.generate()


def public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def card(key: Ed25519PrivateKey, counter: int, name: str = "pi") -> bytes:
    body = make_card(name, "linux", "0.1.0", {"n": counter})
    return sign_record(key, public(key), counter, EXPIRY, body).raw


def links(key: Ed25519PrivateKey, counter: int) -> bytes:
    body = Links((LinkEntry(public(KEY_B)[:8], ConnectionType.RADIO, 120),))
    return sign_record(key, public(key), counter, EXPIRY, body).raw


def test_records_round_trip_and_reopen(tmp_path: Path) -> None:
    records = {card(KEY_A, 1), links(KEY_A, 2), card(KEY_B, 7)}
    with StateStore.open(tmp_path, OWNER) as store:
        assert store.load_records() == []
        store.save_records(records)
        assert set(store.load_records()) == records
    with StateStore.open(tmp_path, OWNER) as store:
        assert set(store.load_records()) == records


def test_newer_counter_replaces_older(store: StateStore) -> None:
    store.save_records([card(KEY_A, 3)])
    newer = card(KEY_A, 4, name="renamed")
    store.save_records([newer])
    assert store.load_records() == [newer]


def test_older_or_equal_counter_does_not_replace_newer(store: StateStore) -> None:
    newer = card(KEY_A, 9)
    store.save_records([newer])
    store.save_records([card(KEY_A, 8)])
    store.save_records([card(KEY_A, 9, name="equivocation")])
    assert store.load_records() == [newer]


def test_one_batch_keeps_the_highest_counter(store: StateStore) -> None:
    highest = card(KEY_A, 20)
    store.save_records([card(KEY_A, 5), highest, card(KEY_A, 10)])
    assert store.load_records() == [highest]


def test_card_and_links_are_kept_separately(store: StateStore) -> None:
    a_card, a_links = card(KEY_A, 2), links(KEY_A, 3)
    store.save_records([a_card, a_links])
    assert sorted(store.load_records()) == sorted([a_card, a_links])


def test_delete_records(store: StateStore) -> None:
    a_card, a_links, b_card = card(KEY_A, 1), links(KEY_A, 2), card(KEY_B, 1)
    store.save_records([a_card, a_links, b_card])
    store.delete_records([(public(KEY_A), RecordKind.CARD), (public(KEY_B), int(RecordKind.LINKS))])
    assert sorted(store.load_records()) == sorted([a_links, b_card])
    store.delete_records([])
    store.delete_records(iter([(public(KEY_A), RecordKind.LINKS), (public(KEY_B), RecordKind.CARD)]))
    assert store.load_records() == []


def test_unparseable_record_is_refused_and_batch_not_saved(store: StateStore) -> None:
    good = card(KEY_A, 1)
    with pytest.raises(RecordError):
        store.save_records([good, b"\xd2\x84not a record"])
    assert store.load_records() == []


def test_corrupt_rows_are_skipped_logged_and_replaceable(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a_card, a_links, b_card = card(KEY_A, 5), links(KEY_A, 6), card(KEY_B, 1)
    with StateStore.open(tmp_path, OWNER) as store:
        store.save_records([a_card, a_links, b_card])
    with sqlite3.connect(tmp_path / STORE_FILE_NAME) as conn:
        # Bit rot in one record, a record filed under the wrong key, and a non-blob.
        conn.execute(
            "UPDATE records SET raw = ? WHERE public_key = ? AND kind = 1",
            (a_card[:-10] + b"\x00" * 10 + b"garbage", public(KEY_A)),
        )
        conn.execute(
            "UPDATE records SET raw = ? WHERE public_key = ? AND kind = 2",
            (card(KEY_B, 6), public(KEY_A)),
        )
        conn.execute("INSERT INTO records VALUES (?, 1, 3, 'text')", (b"\x01" * 32,))
    conn.close()

    with (
        caplog.at_level(logging.WARNING, logger="agent.state.store"),
        StateStore.open(tmp_path, OWNER) as store,
    ):
        assert store.load_records() == [b_card]
    assert caplog.text.count("skipping held record") == 3

    with StateStore.open(tmp_path, OWNER) as store:
        assert store.load_records() == [b_card]  # the damaged rows were dropped
        store.save_records([a_card])  # so the same counter can be stored again
        assert sorted(store.load_records()) == sorted([a_card, b_card])


def test_saved_records_parse(store: StateStore) -> None:
    store.save_records([links(KEY_B, 42)])
    (raw,) = store.load_records()
    env = open_record(raw)
    assert (env.public_key, env.kind, env.counter) == (public(KEY_B), RecordKind.LINKS, 42)


def test_failed_reservation_rolls_back_and_store_stays_usable(tmp_path: Path) -> None:
    with StateStore.open(tmp_path, OWNER) as a, StateStore.open(tmp_path, OWNER) as b:
        a.advance_past(MAX_COUNTER - 1)
        assert a.next_counter() == MAX_COUNTER  # a reserves the very last counter
        # b learns the space is used up inside its write transaction, which must roll back.
        with pytest.raises(CounterExhaustedError):
            b.next_counter()
        b.save_metadata_json("{}")
        assert b.load_metadata_json() == "{}"


# ---------------------------------------------------------------- what a store is


def test_a_new_store_is_published_whole_with_its_ceiling_and_identity(tmp_path: Path) -> None:
    with StateStore.open(tmp_path, OWNER):
        pass
    # Built in a temporary file and linked into place: nothing else is left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == [STORE_FILE_NAME]
    conn = sqlite3.connect(tmp_path / STORE_FILE_NAME)
    try:
        settings = dict(conn.execute("SELECT name, value FROM settings").fetchall())
    finally:
        conn.close()
    assert settings == {"reserved_ceiling": 1, "identity_public_key": OWNER}


def test_an_existing_empty_file_is_refused_not_initialised(tmp_path: Path) -> None:
    (tmp_path / STORE_FILE_NAME).write_bytes(b"")
    with pytest.raises(StoreError, match="empty") as info:
        StateStore.open(tmp_path, OWNER)
    assert str(tmp_path / STORE_FILE_NAME) in str(info.value)
    assert (tmp_path / STORE_FILE_NAME).read_bytes() == b""


def test_an_sqlite_file_without_a_schema_version_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / STORE_FILE_NAME) as conn:
        conn.execute("CREATE TABLE settings (name TEXT PRIMARY KEY NOT NULL, value NOT NULL) WITHOUT ROWID")
    conn.close()
    before = (tmp_path / STORE_FILE_NAME).read_bytes()
    with pytest.raises(StoreError, match="schema version 0"):
        StateStore.open(tmp_path, OWNER)
    assert (tmp_path / STORE_FILE_NAME).read_bytes() == before


def test_a_deleted_ceiling_is_refused_at_open_and_at_the_next_reservation(tmp_path: Path) -> None:
    def delete_ceiling() -> None:
        with sqlite3.connect(tmp_path / STORE_FILE_NAME) as conn:
            conn.execute("DELETE FROM settings WHERE name = 'reserved_ceiling'")
        conn.close()

    with StateStore.open(tmp_path, OWNER) as store:
        handed_out = [store.next_counter() for _ in range(COUNTER_BLOCK)]
        delete_ceiling()  # while running: the next block must not start again at 1
        with pytest.raises(StoreError, match="counter ceiling"):
            store.next_counter()
    with pytest.raises(StoreError, match="counter ceiling") as info:
        StateStore.open(tmp_path, OWNER)
    assert str(tmp_path / STORE_FILE_NAME) in str(info.value)
    assert handed_out == list(range(1, COUNTER_BLOCK + 1))


def test_a_damaged_ceiling_is_refused(tmp_path: Path) -> None:
    StateStore.open(tmp_path, OWNER).close()
    with sqlite3.connect(tmp_path / STORE_FILE_NAME) as conn:
        conn.execute("UPDATE settings SET value = 'lots' WHERE name = 'reserved_ceiling'")
    conn.close()
    with pytest.raises(StoreError, match="damaged counter ceiling"):
        StateStore.open(tmp_path, OWNER)


def test_a_store_opened_for_another_identity_is_refused_naming_both_files(tmp_path: Path) -> None:
    with StateStore.open(tmp_path, OWNER) as store:
        store.save_metadata_json('{"role":"gateway"}')
    before = (tmp_path / STORE_FILE_NAME).read_bytes()
    stranger = generate_identity()
    with pytest.raises(StoreError) as info:
        StateStore.open(tmp_path, stranger.public_key)
    message = str(info.value)
    assert str(tmp_path / STORE_FILE_NAME) in message and str(tmp_path / "identity.key") in message
    assert stranger.peer_key_string in message
    assert (tmp_path / STORE_FILE_NAME).read_bytes() == before
    with StateStore.open(tmp_path, OWNER) as store:  # its own identity still opens it
        assert store.load_metadata_json() == '{"role":"gateway"}'


def test_a_store_that_lost_its_identity_row_is_refused(tmp_path: Path) -> None:
    StateStore.open(tmp_path, OWNER).close()
    with sqlite3.connect(tmp_path / STORE_FILE_NAME) as conn:
        conn.execute("DELETE FROM settings WHERE name = 'identity_public_key'")
    conn.close()
    with pytest.raises(StoreError, match="lost the identity"):
        StateStore.open(tmp_path, OWNER)


def test_the_owner_must_be_a_public_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="32-byte"):
        StateStore.open(tmp_path, b"short")
    assert not (tmp_path / STORE_FILE_NAME).exists()


def test_a_text_setting_that_is_not_utf8_is_a_store_error(tmp_path: Path) -> None:
    with StateStore.open(tmp_path, OWNER) as store:
        store.save_metadata_json("{}")
    with sqlite3.connect(tmp_path / STORE_FILE_NAME) as conn:
        conn.execute("UPDATE settings SET value = CAST(X'7B22FF227D' AS TEXT) WHERE name = 'metadata_json'")
    conn.close()
    with StateStore.open(tmp_path, OWNER) as store, pytest.raises(StoreError) as info:
        store.load_metadata_json()
    assert str(tmp_path / STORE_FILE_NAME) in str(info.value)


# ---------------------------------------------------------------- schema 1 (before the binding)


def make_schema_1_store(state_dir: Path, *, ceiling: int | None, metadata: str | None) -> Path:
    """A store as schema version 1 wrote it: the same tables, no identity row."""
    state_dir.mkdir(mode=0o700, exist_ok=True)
    path = state_dir / STORE_FILE_NAME
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            """CREATE TABLE IF NOT EXISTS settings (
        name  TEXT PRIMARY KEY NOT NULL,
        value NOT NULL
    ) WITHOUT ROWID"""
        )
        conn.execute(
            """CREATE TABLE IF NOT EXISTS records (
        public_key BLOB    NOT NULL,
        kind       INTEGER NOT NULL,
        counter    INTEGER NOT NULL,
        raw        BLOB    NOT NULL,
        PRIMARY KEY (public_key, kind)
    ) WITHOUT ROWID"""
        )
        if ceiling is not None:
            conn.execute("INSERT INTO settings VALUES ('reserved_ceiling', ?)", (ceiling,))
        if metadata is not None:
            conn.execute("INSERT INTO settings VALUES ('metadata_json', ?)", (metadata,))
        conn.execute("PRAGMA user_version=1")
        conn.commit()
    finally:
        conn.close()
    return path


def test_a_schema_1_store_is_upgraded_in_place_and_adopts_the_identity_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = make_schema_1_store(tmp_path, ceiling=1 + 3 * COUNTER_BLOCK, metadata='{"role":"gateway"}')
    with (
        caplog.at_level(logging.WARNING, logger="agent.state.store"),
        StateStore.open(tmp_path, OWNER) as store,
    ):
        assert store.load_metadata_json() == '{"role":"gateway"}'
        assert store.next_counter() == 1 + 3 * COUNTER_BLOCK  # the counter carries on
    assert caplog.text.count("bound to identity") == 1
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    finally:
        conn.close()

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="agent.state.store"):
        StateStore.open(tmp_path, OWNER).close()  # adopted once: from now on it is bound
        with pytest.raises(StoreError, match="belongs to peer"):
            StateStore.open(tmp_path, generate_identity().public_key)
    assert "bound to identity" not in caplog.text


def test_a_schema_1_store_that_never_handed_out_a_counter_starts_at_the_first(tmp_path: Path) -> None:
    make_schema_1_store(tmp_path, ceiling=None, metadata=None)
    with StateStore.open(tmp_path, OWNER) as store:
        assert store.next_counter() == 1


def test_a_schema_1_store_holding_state_but_no_ceiling_is_refused_unchanged(tmp_path: Path) -> None:
    path = make_schema_1_store(tmp_path, ceiling=None, metadata='{"role":"gateway"}')
    with pytest.raises(StoreError, match="counter ceiling"):
        StateStore.open(tmp_path, OWNER)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone() == (1,)  # the upgrade rolled back
        assert conn.execute("SELECT name FROM settings").fetchall() == [("metadata_json",)]
    finally:
        conn.close()
