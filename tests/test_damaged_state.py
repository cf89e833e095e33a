"""A damaged, foreign or mismatched state directory is refused, naming the files; nothing is replaced.

The state directory holds the identity key and the store bound to it. Each test
starts a real peer on a directory, damages it the way a disk, a bad copy or an
operator would, and checks that the next start refuses with a typed error naming
the file(s) -- and leaves every file exactly as it was. The last tests run the
real ``presence-agent run`` and check it says so in one line and exits 1.

Issue 13, item 9: a zero-length database used to be taken for a new store (metadata
lost mesh-wide, counter 3 reused), a deleted counter ceiling silently restarted the
counter, and a deleted key made a new identity that inherited the old store.
Item 8: one corrupted byte in the schema text escaped as ``UnicodeDecodeError``.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lan_support import free_udp_port

from agent.core.errors import PresenceError
from agent.state.identity import IdentityError
from agent.state.local_peer import open_local_peer
from agent.state.store import StoreError

REPO_ROOT = Path(__file__).resolve().parent.parent
KEY = "identity.key"
DB = "state.sqlite3"
#: SQLite's file header; ``sqlite_master`` (the schema text) fills the rest of page 1.
HEADER_BYTES = 100
PAGE_BYTES = 4096


def started(state_dir: Path) -> str:
    """A directory a peer has run in (metadata set, counters used); its peer key string."""
    peer = open_local_peer(state_dir, now=time.time(), device_name="pi-kitchen")
    peer.store.save_metadata_json('{"role": "gateway"}')
    key = peer.identity.peer_key_string
    peer.close()
    return key


def files(state_dir: Path) -> dict[str, bytes]:
    """Every file in the directory and its bytes (SQLite's transient -wal/-shm aside)."""
    return {
        p.name: p.read_bytes() for p in sorted(state_dir.iterdir()) if not p.name.endswith(("-wal", "-shm"))
    }


def refused(state_dir: Path, error: type[PresenceError]) -> str:
    """Start on ``state_dir``, expect ``error``; check nothing changed; return the message."""
    before = files(state_dir)
    with pytest.raises(error) as info:
        open_local_peer(state_dir, now=time.time())
    assert files(state_dir) == before, "a refused start changed the state directory"
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- not a store


def test_a_zero_length_database_is_refused_not_taken_for_a_new_store(tmp_path: Path) -> None:
    started(tmp_path)
    (tmp_path / DB).write_bytes(b"")
    message = refused(tmp_path, StoreError)
    assert str(tmp_path / DB) in message
    assert "empty" in message


def test_an_sqlite_database_of_another_application_is_refused(tmp_path: Path) -> None:
    started(tmp_path)
    (tmp_path / DB).unlink()
    with sqlite3.connect(tmp_path / DB) as other:
        other.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, path TEXT)")
    other.close()
    assert str(tmp_path / DB) in refused(tmp_path, StoreError)


def test_a_store_with_a_table_missing_is_refused(tmp_path: Path) -> None:
    started(tmp_path)
    with sqlite3.connect(tmp_path / DB) as conn:
        conn.execute("DROP TABLE records")
    conn.close()
    assert str(tmp_path / DB) in refused(tmp_path, StoreError)


def test_only_a_directory_without_a_database_gets_a_new_store(tmp_path: Path) -> None:
    key = started(tmp_path)
    (tmp_path / DB).unlink()
    peer = open_local_peer(tmp_path, now=time.time())
    assert peer.identity.peer_key_string == key
    assert peer.store.load_metadata_json() is None  # new, and nothing else left behind
    peer.close()
    assert sorted(files(tmp_path)) == [KEY, DB]


# ---------------------------------------------------------------- counter ceiling


def test_a_store_that_lost_its_counter_ceiling_is_refused_never_restarted(tmp_path: Path) -> None:
    started(tmp_path)
    with sqlite3.connect(tmp_path / DB) as conn:
        conn.execute("DELETE FROM settings WHERE name = 'reserved_ceiling'")
    conn.close()
    message = refused(tmp_path, StoreError)
    assert str(tmp_path / DB) in message
    assert "counter ceiling" in message


def test_stored_metadata_this_agent_refuses_is_a_store_error_naming_the_file(tmp_path: Path) -> None:
    started(tmp_path)
    with sqlite3.connect(tmp_path / DB) as conn:
        conn.execute("UPDATE settings SET value = '{\"role\": \"gate' WHERE name = 'metadata_json'")
    conn.close()
    message = refused(tmp_path, StoreError)
    assert str(tmp_path / DB) in message
    assert "metadata" in message


# ---------------------------------------------------------------- bound to the identity


def test_a_deleted_identity_key_beside_its_store_is_refused_before_a_key_is_made(tmp_path: Path) -> None:
    started(tmp_path)
    (tmp_path / KEY).unlink()
    message = refused(tmp_path, IdentityError)
    assert str(tmp_path / KEY) in message and str(tmp_path / DB) in message
    assert "Restore" in message and "move" in message
    assert not (tmp_path / KEY).exists()


def test_a_store_copied_under_another_identity_is_refused(tmp_path: Path) -> None:
    owner = started(tmp_path / "a")
    other = started(tmp_path / "b")
    shutil.copyfile(tmp_path / "a" / DB, tmp_path / "b" / DB)
    message = refused(tmp_path / "b", StoreError)
    assert str(tmp_path / "b" / DB) in message and str(tmp_path / "b" / KEY) in message
    assert owner in message and other in message


def test_a_store_belongs_to_the_identity_it_was_made_with(tmp_path: Path) -> None:
    key = started(tmp_path)
    again = open_local_peer(tmp_path, now=time.time())
    assert again.identity.peer_key_string == key
    assert again.store.load_metadata_json() == '{"role": "gateway"}'
    again.close()


# ---------------------------------------------------------------- corrupted bytes


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    state_dir = tmp_path_factory.mktemp("pristine")
    started(state_dir)
    return files(state_dir)


def start_with_flipped_byte(state_dir: Path, pristine: dict[str, bytes], offset: int, mask: int) -> None:
    """Start on a copy of ``pristine`` whose database has byte ``offset`` xor ``mask``.

    A clean start is fine (not every byte matters); any failure must be a StoreError.
    """
    shutil.rmtree(state_dir, ignore_errors=True)
    state_dir.mkdir(mode=0o700)
    db = bytearray(pristine[DB])
    db[offset] ^= mask
    (state_dir / KEY).write_bytes(pristine[KEY])
    (state_dir / KEY).chmod(0o600)
    (state_dir / DB).write_bytes(bytes(db))
    try:
        peer = open_local_peer(state_dir, now=time.time())
    except StoreError as exc:
        assert str(state_dir / DB) in str(exc)
        return
    peer.close()


def test_every_schema_text_byte_flipped_is_a_store_error_or_a_clean_start(
    tmp_path: Path, pristine: dict[str, bytes]
) -> None:
    # The schema rows (type, name, table, root page, CREATE TABLE text) fill page 1 from
    # the cell content area, whose start the page header gives, to the page's end.
    # 0x80 turns an ASCII byte into invalid UTF-8, the case that escaped as
    # UnicodeDecodeError; 0x01 makes a different, valid character.
    cells_start = int.from_bytes(pristine[DB][HEADER_BYTES + 5 : HEADER_BYTES + 7], "big")
    assert HEADER_BYTES < cells_start < pristine[DB].index(b"CREATE TABLE")
    for offset in range(cells_start, PAGE_BYTES):
        for mask in (0x80, 0x01):
            start_with_flipped_byte(tmp_path / "flipped", pristine, offset, mask)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset=st.integers(HEADER_BYTES, PAGE_BYTES - 1), mask=st.integers(1, 255))
def test_any_byte_of_the_schema_page_flipped_is_a_store_error_or_a_clean_start(
    tmp_path: Path, pristine: dict[str, bytes], offset: int, mask: int
) -> None:
    start_with_flipped_byte(tmp_path / "flipped", pristine, offset, mask)


# ---------------------------------------------------------------- the command line


def run_agent(state_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``presence-agent run --state-dir D`` on loopback; a start that does not fail is killed."""
    config = tmp_path / "agent.toml"
    config.write_text(f'[lan]\ninterfaces = ["127.0.0.1"]\nmulticast_port = {free_udp_port()}\n')
    argv = [sys.executable, "-m", "agent.cli", "run", "--config", str(config), "--state-dir", str(state_dir)]
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20, cwd=REPO_ROOT, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"presence-agent run started on a damaged state directory {state_dir}")


def damage_empty_database(state_dir: Path) -> None:
    (state_dir / DB).write_bytes(b"")


def damage_lost_ceiling(state_dir: Path) -> None:
    with sqlite3.connect(state_dir / DB) as conn:
        conn.execute("DELETE FROM settings WHERE name = 'reserved_ceiling'")
    conn.close()


def damage_deleted_key(state_dir: Path) -> None:
    (state_dir / KEY).unlink()


def damage_schema_byte(state_dir: Path) -> None:
    db = bytearray((state_dir / DB).read_bytes())
    db[db.index(b"tablerecordsrecords") + len("table")] ^= 0x80  # the table's name: the one that escaped
    (state_dir / DB).write_bytes(bytes(db))


@pytest.mark.parametrize(
    "damage",
    [damage_empty_database, damage_lost_ceiling, damage_deleted_key, damage_schema_byte],
    ids=["empty-database", "lost-ceiling", "deleted-key", "schema-byte"],
)
def test_run_on_a_damaged_state_directory_exits_1_with_one_line_naming_the_file(
    tmp_path: Path, damage: object
) -> None:
    state_dir = tmp_path / "state"
    started(state_dir)
    assert callable(damage)
    damage(state_dir)
    before = files(state_dir)

    result = run_agent(state_dir, tmp_path)

    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("presence-agent: ")
    assert str(state_dir / DB) in lines[0]
    assert files(state_dir) == before


def test_keys_show_beside_a_store_without_its_key_makes_no_key(tmp_path: Path) -> None:
    started(tmp_path)
    (tmp_path / KEY).unlink()
    before = files(tmp_path)
    argv = [sys.executable, "-m", "agent.cli", "keys", "show", "--state-dir", str(tmp_path)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO_ROOT, check=False)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert str(tmp_path / KEY) in line and str(tmp_path / DB) in line
    assert files(tmp_path) == before
